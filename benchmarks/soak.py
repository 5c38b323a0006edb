"""Soak: the whole daemon on an unthrottled video with a fault every few seconds (issue 6).

`sightd run` (a real process tree) reads a colour video this script writes (fps 0: as fast as
it decodes) and classifies it with a small model trained here in seconds; a log subscriber
writes every label and event, and an mqtt subscriber publishes to a mosquitto this script
starts (when mosquitto is installed). Faults rotate, one every --fault-every seconds once the
previous one has recovered (so each recovery is measured on its own):
  kill   SIGKILL of a random child: capture, worker, a subscriber, or the fork server they are
         all forked from (they die with it); the supervisor restarts what died
  pause  SIGSTOP of the worker for PAUSE_SECONDS (less than heartbeat_timeout), then SIGCONT
  broker mosquitto stopped, and started again after BROKER_DOWN_SECONDS
Everything is watched from outside (soak_observe.py); soak_report.py says what the figures mean.

Usage: python benchmarks/soak.py [--duration 600] [--fault-every 5] [--seed 0] [--out soak.json]
                                [--workdir DIR (kept: config, daemon.log, labels.jsonl)]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from soak_observe import BusReader, LogTail, MqttReader, daemon_processes, sample
from soak_report import recoveries, report, summarize

from sightd.config import load_config

PAUSE_SECONDS = 3.0  # the supervisor kills a worker silent for heartbeat_timeout (5 s)
BROKER_DOWN_SECONDS = 2.0
RECOVERY_LIMIT = 30.0  # a fault not recovered from by then is reported as such
SAMPLE_EVERY = 10.0  # seconds between RSS / open-file samples
COLOURS = {"blue": (200, 40, 30), "green": (40, 190, 40), "red": (30, 40, 210)}  # BGR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def colour_frames(count: int, size=(120, 160), seed: int = 0) -> tuple[list, list[str]]:
    """Noisy one-colour frames, `count` per colour: (frames, their colour names)."""
    rng = np.random.default_rng(seed)
    names = [name for name in COLOURS for _ in range(count)]
    frames = []
    for name in names:
        frame = np.empty((*size, 3), np.int16)
        frame[:] = COLOURS[name]
        frame += rng.integers(-25, 26, size=frame.shape, dtype=np.int16)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames, names


def write_video(path: Path) -> Path:
    frames, _ = colour_frames(10)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def train_model(path: Path) -> Path:
    """A `seed` model that tells the three colours apart, trained in a few seconds."""
    import torch

    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.model import create_model
    from sightd.preprocessing import preprocess

    torch.manual_seed(0)
    frames, names = colour_frames(8, seed=1)
    classes = sorted(COLOURS)
    targets = torch.tensor([classes.index(name) for name in names])
    batch, model = preprocess(frames), create_model("seed", len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), targets).backward()
        optimizer.step()
    save_checkpoint(path, model.eval(), ModelInfo("seed", classes, 64, [0.5] * 3, [0.5] * 3))
    return path


class Broker:
    """mosquitto on a free port, no persistence; stop() and start() again for the fault."""

    def __init__(self, folder: Path):
        self.port, self.folder, self.process = free_port(), folder, None
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "allow_anonymous true"]
        self.conf.write_text("\n".join([*lines, "user root"]) + "\n")

    def start(self) -> None:
        log = open(self.folder / "mosquitto.log", "a")  # noqa: SIM115 - the broker owns it
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def write_config(root: Path, video: Path, model: Path, broker: Broker | None) -> Path:
    names = ("frames", "labels", "status", "status_in")
    subscribers = [{"type": "log", "path": str(root / "labels.jsonl"), "max_bytes": 2**31}]
    if broker is not None:
        subscribers.append({"type": "mqtt", "port": broker.port, "topics": ["label", "event"]})
    config = {
        "cameras": [{"name": "cam0", "source": str(video), "fps": 0}],
        "transport": {**{n: f"tcp://127.0.0.1:{free_port()}" for n in names}},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "model": {"path": str(model), "device": "cpu", "reload": False},
        "subscribers": subscribers,
        "daemon": {"max_restarts": 1000},  # a soak kills children on purpose: never give up
        "log_level": "warning",
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def inject(kind: str, daemon: subprocess.Popen, broker: Broker | None, rng) -> dict | None:
    """One fault; returns {kind, target, at} with `at` the moment the fault ended."""
    children = {k: v for k, v in daemon_processes(daemon.pid).items() if k != "supervisor"}
    if kind == "kill" and children:
        target = rng.choice(sorted(children))
        os.kill(children[target], signal.SIGKILL)
        # Dead means gone: the fork server's children die with it, but only once it is.
        dead = children.values() if target == "forkserver" else [children[target]]
        wait_dead(dead)
        return {"kind": "kill", "target": target, "at": time.time()}
    if kind == "pause" and "infer" in children:
        os.kill(children["infer"], signal.SIGSTOP)
        time.sleep(PAUSE_SECONDS)
        os.kill(children["infer"], signal.SIGCONT)
        return {"kind": "pause", "target": "infer", "at": time.time()}
    if kind == "broker" and broker is not None:
        broker.stop()
        stopped = time.time()
        time.sleep(BROKER_DOWN_SECONDS)
        broker.start()
        return {"kind": "broker", "target": "mosquitto", "at": time.time(), "from": stopped}
    return None  # the target is being restarted right now: skip this turn


def wait_dead(pids, timeout: float = 5.0) -> None:
    """Until every pid has exited (a zombie or gone): a killed process may still run briefly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.005)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def soak(args, daemon, broker, streams) -> tuple[list[dict], dict, dict]:
    """Inject faults until the duration is over; returns (faults, first and last samples)."""
    rng = random.Random(args.seed)
    kinds = ["kill", "pause", "broker"] if broker is not None else ["kill", "pause"]
    faults, turn = [], 0
    first = last = sample(daemon.pid)
    end, next_sample = time.monotonic() + args.duration, time.monotonic() + SAMPLE_EVERY
    while time.monotonic() < end and daemon.poll() is None:
        time.sleep(min(args.fault_every, max(0.0, end - time.monotonic())))
        if time.monotonic() >= next_sample:
            last, next_sample = sample(daemon.pid), time.monotonic() + SAMPLE_EVERY
            first = {**last, **first}  # a component's first sample, wherever it came
        if time.monotonic() >= end:
            break
        fault = inject(kinds[turn % len(kinds)], daemon, broker, rng)
        turn += 1
        if fault is not None:
            faults.append(fault)
            wait_for_recovery(fault, streams)
    return faults, first, sample(daemon.pid) or last


def wait_for_recovery(fault: dict, streams: dict) -> None:
    deadline = time.monotonic() + RECOVERY_LIMIT
    while time.monotonic() < deadline and not recoveries([fault], streams)[0][1]:
        time.sleep(0.05)


def wait_until_ready(streams: dict, daemon: subprocess.Popen, timeout: float = 120) -> None:
    """Until labels reach the bus, the log file and (if there is one) the broker."""
    deadline = time.monotonic() + timeout
    while not all(records for records in streams.values() if records is not None):
        if time.monotonic() > deadline or daemon.poll() is not None:
            raise RuntimeError("the daemon never delivered labels everywhere; see daemon.log")
        time.sleep(0.1)


def stop_daemon(daemon: subprocess.Popen) -> int | str:
    """SIGTERM, as systemd would; its exit code, or "killed" if it did not stop in 30 s."""
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
        return "killed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of faults")
    parser.add_argument("--fault-every", type=float, default=5, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=0, help="picks the children to kill")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep config, logs and video here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sightd-soak-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        broker = Broker(root) if shutil.which("mosquitto") else None
        if broker is not None:
            broker.start()
        config_path = write_config(
            root, write_video(root / "colours.avi"), train_model(root / "model.st"), broker
        )
        figures = run(args, root, config_path, broker)
    print(report(figures))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


def run(args, root: Path, config_path: Path, broker: Broker | None) -> dict:
    config = load_config(config_path)
    bus, tail = BusReader(config), LogTail(root / "labels.jsonl")
    bus.start()
    tail.start()
    with open(root / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sightd", "run", "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    mqtt = MqttReader(broker.port) if broker is not None else None
    streams = {"bus": bus.figures.labels, "log": tail.lines, "mqtt": mqtt and mqtt.labels}
    try:
        wait_until_ready(streams, daemon)
        began = time.time()
        faults, first, last = soak(args, daemon, broker, streams)
        elapsed = time.time() - began
    finally:
        stopping = time.time()
        stopped = stop_daemon(daemon)
        if mqtt is not None:
            mqtt.close()
        if broker is not None:
            broker.stop()
        time.sleep(0.5)  # the last lines reach the tail and the reader
        bus.stop.set(), tail.stop.set()
        bus.join(5), tail.join(5)
    figures = summarize(dict(
        duration=elapsed, began=began, stopping=stopping, faults=faults,
        recovery=recoveries(faults, streams), first=first, last=last,
        bus=bus, log=tail.lines, mqtt=mqtt.labels if mqtt else None,
    ))  # fmt: skip
    return {**figures, "fault_every_s": args.fault_every, "seed": args.seed, "exit_code": stopped}


if __name__ == "__main__":
    main()
