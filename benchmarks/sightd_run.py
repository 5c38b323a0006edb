"""A `sightd run` pipeline measured from outside, for benchmarks/engines.py and many_cameras.py.

`run_pipeline` starts `sightd run` (supervisor, capture(s), worker; no subscriber, no HTTP
server) in its own session on free ports, and a listener in its own process that stamps each
label on receipt and keeps every worker status; after a warm-up it samples, over one window:
latency (captured_at to receipt, p50/p99, per camera too), labels/s, CPU of the captures and
of the worker (% of one core, from /proc), the CPU every other process on the machine used in
the same window, the worker's RSS and the tree's PSS, and from the worker's statuses the
frames dropped and stale and its batch size. With `kills`, it SIGKILLs the worker that many
times and times each restart to the first label of a frame captured after the kill.
Run on its own, it measures one scenario and prints the worker's CPU per label (`--help`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from idle_cost import free_ports
from pipeline_baselines import percentile
from pipeline_latency import cpu_seconds, rss_mib

SIGHTD = [sys.executable, "-m", "sightd"]
WARMUP_S = 3.0  # after the first label: every batch size seen, caches settled


def pipeline_config(folder: Path, source, model: Path, row: dict, cameras: int, fps: float):
    """`cameras` cameras playing `source` (a video file, or "synthetic") at `fps`, each on a
    free port of its own, served by `row`'s engine and device."""
    ports = free_ports(4 + cameras)
    config = {
        "cameras": [
            {
                "name": f"cam{i}",
                "source": str(source),
                "fps": fps,
                "loop": True,
                "endpoint": f"tcp://127.0.0.1:{ports[4 + i]}",
            }
            for i in range(cameras)
        ],
        "transport": {
            name: f"tcp://127.0.0.1:{port}"
            for name, port in zip(("frames", "labels", "status", "status_in"), ports, strict=False)
        },
        "http": {"enabled": False},
        "model": {"path": str(model), "device": row["device"], "engine": row["engine"]},
        "daemon": {"restart_window": 1.0},  # every kill below waits the first backoff only
        "subscribers": [],
        "log_level": "warning",
    }
    path = folder / f"{row['engine']}-{row['device']}-{cameras}x{fps:g}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tree(root: int) -> dict[str, int]:
    """title -> pid of the `sightd run` tree (children of the supervisor and the fork server)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,args="], capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        pid, pgid, args = line.split(None, 2)
        if int(pgid) == root:
            found[args.strip()] = int(pid)
    return found


def machine_busy() -> float:
    """CPU seconds every CPU has been busy (steal included: time the host gave elsewhere)."""
    from sightd.cpu import busy_ticks, usable_cpus

    return busy_ticks(Path("/proc/stat").read_text(), usable_cpus()) / os.sysconf("SC_CLK_TCK")


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def labels_of(record: Path) -> list[list]:
    """The listener's record so far: [received, captured_at, camera] per label."""
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.endswith("]")]


def first_label(record: Path, after: float, timeout: float) -> float | None:
    """Receipt time of the first label of a frame captured after `after` (UNIX time), from the
    listener's live record: one in flight at a kill does not count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received, captured, _ in labels_of(record):
            if captured > after:
                return received
        time.sleep(0.02)
    return None


LISTENER = """
import json, sys, time
import zmq
from sightd.config import load_config
from sightd.protocol import unpack_message
config = load_config(sys.argv[1])
context = zmq.Context()
sock = context.socket(zmq.SUB)
sock.setsockopt(zmq.RECONNECT_IVL, 50)  # a restarted worker is heard as soon as it binds,
sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)  # not after this reader's own backoff
sock.setsockopt(zmq.SUBSCRIBE, b"label.")
sock.connect(config.transport.labels)
status = context.socket(zmq.SUB)
status.setsockopt(zmq.SUBSCRIBE, b"status.infer")
status.connect(config.transport.status)
poller = zmq.Poller()
poller.register(sock, zmq.POLLIN)
poller.register(status, zmq.POLLIN)
flushed = 0.0
with open(sys.argv[2], "w") as out, open(sys.argv[3], "w", buffering=1) as statuses:
    while True:
        ready = dict(poller.poll())
        received = time.time()
        if status in ready:
            statuses.write(json.dumps(unpack_message(status.recv_multipart())[2]) + "\\n")
        if sock in ready:
            _, _, body = unpack_message(sock.recv_multipart())
            out.write(json.dumps([received, body["captured_at"], body["camera"]]) + "\\n")
        if received - flushed > 0.05:
            out.flush()
            flushed = received
"""


def run_pipeline(folder, source, model, row, cameras, fps, seconds, kills=0) -> dict:
    """One scenario: `cameras` cameras at `fps` for a window of `seconds` (see the module)."""
    config = pipeline_config(folder, source, model, row, cameras, fps)
    record, status_record = config.with_suffix(".labels"), config.with_suffix(".status")
    with open(config.with_suffix(".log"), "wb") as log:
        run = subprocess.Popen(
            [*SIGHTD, "run", "-c", str(config)], stdout=log, stderr=log, start_new_session=True
        )
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(config), str(record), str(status_record)]
    )
    try:
        if first_label(record, 0.0, 180) is None:
            log = config.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{row['name']}: no label within 180 s; its log ends:\n{log}")
        time.sleep(WARMUP_S)
        result, t0, t1 = measure_window(run.pid, listener.pid, seconds)
        result["restart_s"] = [restart(run.pid, record) for _ in range(kills)]
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=60)
        listener.kill()
        listener.wait()
    window = [(r, c, cam) for r, c, cam in labels_of(record) if t0 <= r <= t1]
    result.update(latency_figures(window, t1 - t0))
    result.update(status_figures(status_record, t0, t1))
    rate = result["labels_per_s"]
    result["cpu_ms_per_label"] = 10 * result["cpu_percent"] / rate if rate else None
    return result


def measure_window(root: int, listener: int, seconds: float) -> tuple[dict, float, float]:
    """CPU of captures and worker, others' CPU, RSS and PSS over a window of `seconds`."""
    pids = tree(root)
    captures = [pid for title, pid in pids.items() if title.startswith("sightd.capture")]
    workers = [pids["sightd.infer"]]
    ours = [*pids.values(), listener]
    cpu0 = [sum(cpu_seconds(p) for p in group) for group in (captures, workers)]
    busy0, t0 = machine_busy() - sum(cpu_seconds(p) for p in ours), time.time()
    time.sleep(seconds)
    cpu1 = [sum(cpu_seconds(p) for p in group) for group in (captures, workers)]
    busy1, t1 = machine_busy() - sum(cpu_seconds(p) for p in ours), time.time()
    capture_cpu, worker_cpu = (100 * (b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1, strict=True))
    result = {"cpu_percent": capture_cpu + worker_cpu, "capture_cpu_percent": capture_cpu}
    result["worker_cpu_percent"] = worker_cpu
    result["others_cpu_percent"] = 100 * (busy1 - busy0) / (t1 - t0)
    result["worker_rss_mib"] = rss_mib(pids["sightd.infer"])
    result["tree_pss_mib"] = sum(pss_mib(p) for p in tree(root).values())
    return result, t0, t1


def restart(root: int, record: Path) -> float | None:
    """SIGKILL of the worker to the first label of a frame captured after it."""
    time.sleep(1.5)  # past restart_window: the restart waits the first backoff
    worker = tree(root)["sightd.infer"]
    killed = time.time()
    os.kill(worker, signal.SIGKILL)
    back = first_label(record, killed, 60)
    return None if back is None else back - killed


def latency_figures(window: list[tuple], seconds: float) -> dict:
    latency = sorted(1000 * (r - c) for r, c, _ in window)
    per_camera: dict[str, list[float]] = {}
    for r, c, camera in window:
        per_camera.setdefault(camera, []).append(1000 * (r - c))
    rate = len(window) / seconds
    return {
        "labels": len(window),
        "labels_per_s": rate,
        "p50_ms": percentile(latency, 50) if latency else None,
        "p99_ms": percentile(latency, 99) if latency else None,
        "max_ms": latency[-1] if latency else None,
        "cameras_labelled": len(per_camera),
        "worst_camera_p99_ms": max(
            (percentile(sorted(v), 99) for v in per_camera.values()), default=None
        ),  # fmt: skip
    }


def status_figures(record: Path, t0: float, t1: float) -> dict:
    """From the worker's statuses in the window: frames in, dropped, stale; batch sizes."""
    statuses = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    inside = [s for s in statuses if t0 <= s["at"] <= t1 + 1 and "frames_in" in s]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    batches = [s["batch"] for s in inside[1:] if "batch" in s]
    return {
        "frames_in": last["frames_in"] - first["frames_in"],
        "dropped": last["dropped"] - first["dropped"],
        "stale": last["stale"] - first["stale"],
        "batch_mean": sum(b["mean"] for b in batches) / len(batches) if batches else None,
        "batch_max": max((b["max"] for b in batches), default=None),
    }


def main() -> None:
    """One scenario from the command line, for comparing two trees of sightd in one sitting:
    run it once with PYTHONPATH=<the other tree>, once without, taking turns."""
    import argparse
    import tempfile

    from pipeline_latency import write_scene

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint")
    parser.add_argument("--engine", default="openvino")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    row = {"name": args.engine, "engine": args.engine, "device": "cpu"}
    with tempfile.TemporaryDirectory(prefix="sightd-run-") as tmp:
        video = write_scene(Path(tmp) / "scene.avi")
        run = run_pipeline(Path(tmp), video, args.model, row, args.cameras, args.fps, args.seconds)
    rate = run["labels_per_s"]
    worker_ms = 10 * run["worker_cpu_percent"] / rate if rate else None
    print(
        f"{args.engine} {args.cameras}x{args.fps:g} fps: {rate:.2f} labels/s, worker "
        f"{run['worker_cpu_percent']:.3f}% ({worker_ms:.3f} ms a label), capture "
        f"{run['capture_cpu_percent']:.3f}%, others {run['others_cpu_percent']:.0f}%, "
        f"load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
