"""Subscriber delivery latency: captured_at -> each built-in's action, and the pipeline's
latency with a deliberately stuck subscriber attached (it must not change).

Part 1, built-ins: this script publishes label messages as the worker does (protocol
pack_message, captured_at = now) at a steady rate to five `sightd subscribe` processes, and
times each action where it happens:
  print    the line arriving on its stdout
  log      the line appearing in its file (polled every 1 ms: up to 1 ms late)
  command  `date +%s.%N` run by it: the program's own clock when it runs
  webhook  the POST reaching a local HTTP server
  mqtt     the message reaching a paho client through mosquitto (skipped if not installed)
Part 2, pipeline: `sightd capture` (synthetic source) -> `sightd infer` (an untrained seed
model on the CPU: latency, not accuracy, is measured) -> a `log` subscriber. captured_at ->
label at a plain listener and -> log line: alone, then with a stuck subscriber (the test
plugin, whose handle() never returns) and a ZeroMQ reader that never reads attached, then
alone again after they are killed (the spread between the two "alone" phases is noise).
Usage: python benchmarks/subscriber_latency.py [--messages 200] [--rate 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
import zmq

from sightd.protocol import label_body, pack_message, unpack_message

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, subscribers: list[dict], **sections) -> Path:
    ports = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("frames", "labels", "status")}
    transport = {**ports, "status_in": f"tcp://127.0.0.1:{free_port()}", "status_interval": 1.0}
    path = folder / "config.yaml"
    data = {"transport": transport, "subscribers": subscribers, "log_level": "warning"}
    path.write_text(yaml.safe_dump({**data, **sections}))
    return path


class Processes:
    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, *argv: str, env: dict | None = None, stdout=subprocess.DEVNULL):
        process = subprocess.Popen(
            [sys.executable, "-m", "sightd", *argv],
            stdout=stdout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, 9)
            process.wait()


def follow(path: Path, on_line, stop: threading.Event) -> threading.Thread:
    """Call on_line(line, seen_at) for each line appended to `path` (polled every 1 ms)."""

    def run():
        while not path.exists() and not stop.is_set():
            time.sleep(0.001)
        with open(path) as handle:
            buffer = ""
            while not stop.is_set():
                chunk = handle.readline()
                if not chunk:
                    time.sleep(0.001)
                    continue
                buffer += chunk
                if buffer.endswith("\n"):
                    on_line(buffer, time.time())
                    buffer = ""

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_lines(stream, on_line) -> threading.Thread:
    def run():
        for line in stream:
            on_line(line, time.time())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def summary(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "no data"
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return f"p50 {statistics.median(ms):7.2f} ms  p99 {p99:7.2f} ms  (n={len(ms)})"


# ---- part 1: each built-in ------------------------------------------------------------------


def start_webhook_server(actions: dict[str, float]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            actions[body["label"]] = time.time()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_mqtt_reader(port: int, actions: dict[str, float]):
    import paho.mqtt.client as paho

    def keep(client, userdata, message):
        actions[json.loads(message.payload)["label"]] = time.time()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe("sightd/+/label")
    client.on_message = keep
    deadline = time.monotonic() + 10
    while True:
        try:
            client.connect("127.0.0.1", port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.loop_start()
    return client


def builtin_entries(folder: Path, webhook_url: str, mqtt_port: int | None) -> list[dict]:
    common = {"topics": ["label"]}
    entries = [
        {"type": "print", **common},
        {"type": "log", "path": str(folder / "labels.jsonl"), **common},
        {"type": "command", "run": ["date", "+%s.%N {label}"], "cooldown": 0, **common},
        {"type": "webhook", "url": webhook_url, "cooldown": 0, **common},
    ]
    entries[2]["max_concurrent"] = 16
    if mqtt_port:
        entries.append({"type": "mqtt", "port": mqtt_port, **common})
    return entries


def measure_builtins(folder: Path, messages: int, rate: float) -> dict[str, list[float]]:
    kinds = ["print", "log", "command", "webhook"] + (["mqtt"] if MOSQUITTO else [])
    actions: dict[str, dict[str, float]] = {kind: {} for kind in kinds}  # label -> acted at
    procs, stop = Processes(), threading.Event()
    server = start_webhook_server(actions["webhook"])
    broker = mqtt_client = None
    mqtt_port = free_port() if MOSQUITTO else None
    if mqtt_port:
        broker = subprocess.Popen([MOSQUITTO, "-p", str(mqtt_port)], stderr=subprocess.DEVNULL)
        mqtt_client = start_mqtt_reader(mqtt_port, actions["mqtt"])
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    entries = builtin_entries(folder, url, mqtt_port)
    config = write_config(folder, entries)
    try:
        for kind in kinds:
            if kind in ("print", "command"):  # their action is a line on stdout
                process = procs.start("subscribe", kind, "-c", str(config), stdout=subprocess.PIPE)
                read_lines(process.stdout, _stdout_action(kind, actions[kind]))
            else:
                procs.start("subscribe", kind, "-c", str(config))
        follow(folder / "labels.jsonl", _log_action(actions["log"]), stop)
        sent = publish_labels(config, len(entries), messages, rate)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(len(a) < messages for a in actions.values()):
            time.sleep(0.05)
        return {k: [got[m] - sent[m] for m in sent if m in got] for k, got in actions.items()}
    finally:
        stop.set()
        procs.close()
        server.shutdown()
        if mqtt_client:
            mqtt_client.loop_stop()
        if broker:
            broker.kill()
            broker.wait()


def _stdout_action(kind: str, got: dict[str, float]):
    def on_line(line: str, seen_at: float) -> None:
        fields = line.split()
        if kind == "print" and len(fields) == 4:  # 12:00:01 cam0 m17 0.90
            got[fields[2]] = seen_at
        elif kind == "command" and len(fields) == 2:  # 1712345678.123456789 m17
            got[fields[1]] = float(fields[0])

    return on_line


def _log_action(got: dict[str, float]):
    return lambda line, seen_at: got.__setitem__(json.loads(line)["label"], seen_at)


def publish_labels(config: Path, hosts: int, messages: int, rate: float) -> dict[str, float]:
    """Send `messages` labels m0, m1, ... once every host has subscribed; label -> sent at."""
    transport = yaml.safe_load(config.read_text())["transport"]
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.bind(transport["labels"])
    joined, deadline = 0, time.monotonic() + 30
    while joined < hosts:  # one subscription each (topics: [label])
        if time.monotonic() > deadline:
            raise SystemExit(f"only {joined} of {hosts} subscribers started")
        if pub.poll(100) and pub.recv()[:1] == b"\x01":
            joined += 1
    time.sleep(1.0)  # let the mqtt subscriber reach its broker
    sent, start = {}, time.monotonic()
    for seq in range(messages):
        time.sleep(max(0.0, start + seq / rate - time.monotonic()))
        label, now = f"m{seq}", time.time()
        body = label_body("cam0", seq, now, label, 0.9, {}, {})
        pub.send_multipart(pack_message("label", "cam0", body))
        sent[label] = now
    pub.close(linger=2000)
    return sent


# ---- part 2: the pipeline with a stuck subscriber ---------------------------------------------


def save_untrained_model(path: Path) -> None:
    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.model import create_model

    info = ModelInfo("seed", ["a", "b", "c"], 64, [0.5] * 3, [0.5] * 3)
    save_checkpoint(path, create_model("seed", 3), info)


def install_test_plugin(folder: Path) -> dict[str, str]:
    source = shutil.copytree(ROOT / "tests" / "plugin_pkg", folder / "plugin_src")
    target = folder / "plugin_site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    paths = [str(target), os.environ.get("PYTHONPATH")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, paths))}


def _captured_and_seen(log_seen: list):
    return lambda line, seen: log_seen.append((json.loads(line)["captured_at"], seen))


def latest_status(status: zmq.Socket) -> dict:
    body = {}
    while status.poll(3000 if not body else 0):
        _, _, body = unpack_message(status.recv_multipart())
    return body


def collect(labels: zmq.Socket, log_seen: list, seconds: float) -> tuple[list[float], list[float]]:
    """captured_at -> arrival at the listener, and -> the log line, over `seconds`."""
    listener, log_start = [], len(log_seen)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if labels.poll(100):
            parts = labels.recv_multipart()
            now = time.time()
            _, _, body = unpack_message(parts)
            listener.append(now - body["captured_at"])
    return listener, [seen - captured for captured, seen in log_seen[log_start:]]


def measure_pipeline(folder: Path, seconds: float) -> dict:
    save_untrained_model(folder / "model.safetensors")
    stuck = {"type": "recorder", "path": str(folder / "never.jsonl"), "hang_on": "*"}
    stuck |= {"handler_timeout": 3600, "queue_size": 10}
    log = {"type": "log", "path": str(folder / "pipeline.jsonl"), "topics": ["label"]}
    camera = {"name": "cam0", "source": "synthetic", "fps": 15, "resize": [320, 240]}
    model = {"path": str(folder / "model.safetensors"), "device": "cpu"}
    config = write_config(folder, [log, stuck], cameras=[camera], model=model)
    transport = yaml.safe_load(config.read_text())["transport"]
    procs, stop, log_seen = Processes(), threading.Event(), []
    ctx = zmq.Context.instance()
    status = ctx.socket(zmq.SUB)
    status.setsockopt(zmq.SUBSCRIBE, b"status.subscriber:recorder")
    status.bind(transport["status_in"])
    labels = ctx.socket(zmq.SUB)
    labels.setsockopt(zmq.SUBSCRIBE, b"label.")
    labels.connect(transport["labels"])
    try:
        procs.start("infer", "-c", str(config))
        procs.start("capture", "-c", str(config))
        procs.start("subscribe", "log", "-c", str(config))
        follow(folder / "pipeline.jsonl", _captured_and_seen(log_seen), stop)
        if not labels.poll(60_000):
            raise SystemExit("the pipeline published no label within 60 s")
        collect(labels, log_seen, 5.0)  # warm up
        alone = collect(labels, log_seen, seconds)
        stuck = procs.start(
            "subscribe", "recorder", "-c", str(config), env=install_test_plugin(folder)
        )
        never_reads = ctx.socket(zmq.SUB)  # a reader stuck at the socket level
        never_reads.setsockopt(zmq.RCVHWM, 1)
        never_reads.setsockopt(zmq.SUBSCRIBE, b"")
        never_reads.connect(transport["labels"])
        collect(labels, log_seen, 3.0)  # it starts and gets stuck on its first message
        with_stuck = collect(labels, log_seen, seconds)
        stuck_status = latest_status(status)
        os.killpg(stuck.pid, 9)
        never_reads.close()
        after = collect(labels, log_seen, seconds)  # alone again: how much the figures wander
        return {"alone": alone, "stuck": with_stuck, "after": after, "stuck_status": stuck_status}
    finally:
        stop.set()
        procs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="labels in part 1")
    parser.add_argument("--rate", type=float, default=20.0, help="labels per second in part 1")
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase of part 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sightd-bench-") as tmp:
        print(f"part 1: {args.messages} labels at {args.rate:g}/s, captured_at -> action")
        results = measure_builtins(Path(tmp), args.messages, args.rate)
        for kind, latencies in results.items():
            print(f"  {kind:8s} {len(latencies):4d}/{args.messages} acted  {summary(latencies)}")
        if not MOSQUITTO:
            print("  mqtt     skipped: mosquitto is not installed")
    with tempfile.TemporaryDirectory(prefix="sightd-bench-") as tmp:
        print(f"part 2: capture (synthetic, 15 fps, 320x240) -> infer (seed, cpu) -> labels; "
              f"{args.seconds:g} s per phase")  # fmt: skip
        figures = measure_pipeline(Path(tmp), args.seconds)
        for phase in ("alone", "stuck", "after"):
            listener, log = figures[phase]
            print(f"  {phase:5s} listener {summary(listener)}")
            print(f"  {phase:5s} log      {summary(log)}")
        for index, what in enumerate(("listener", "log")):
            a, s = figures["alone"][index], figures["stuck"][index]
            if len(a) > 1 and len(s) > 1:
                ratio = statistics.median(s) / statistics.median(a)
                print(f"  p50 with stuck / alone, {what}: {ratio:.2f}")
        stuck = figures["stuck_status"]
        shown = ", ".join(
            f"{k} {stuck.get(k)}" for k in ("state", "delivered", "dropped", "queued")
        )
        print(f"  stuck subscriber status: {shown}")


if __name__ == "__main__":
    main()
