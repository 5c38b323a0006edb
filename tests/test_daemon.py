"""`sightd run` as a real process tree on a video: labels flow, and the tree heals and stops.

One tree serves the whole module (starting one costs seconds); the tests run in file order
and the last one stops it with SIGTERM. Each test also stands on its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
import zmq
from click.testing import CliRunner
from conftest import color_frame, free_port, wait_for, write_video
from daemon_support import start_sightd_run

from sightd import transport
from sightd.cli import main
from sightd.client import subscribe
from sightd.config import load_config
from sightd.protocol import unpack_message

pytestmark = pytest.mark.slow

CRASHY_PLUGIN = '''
from sightd.subscribers.base import Subscriber

class Crashy(Subscriber):
    """A broken third-party plugin: it fails every time it starts."""

    def start(self):
        raise RuntimeError("crashy plugin cannot start")

    def handle(self, message):
        pass
'''


def install_crashy_plugin(root: Path) -> Path:
    """A real plugin, registered in the sightd.subscribers entry-point group."""
    root.mkdir()
    (root / "crashy_plugin.py").write_text(CRASHY_PLUGIN)
    dist = root / "crashy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crashy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sightd.subscribers]\ncrashy = crashy_plugin:Crashy\n")
    return root


class Daemon:
    """A running `sightd run` with its own process group, log file and systemd socket."""

    def __init__(self, root: Path, checkpoint: Path):
        frames = [color_frame(c, (120, 160)) for c in ("blue", "green", "red") for _ in range(10)]
        video = write_video(root / "colors.avi", frames, fps=10)
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self._config(video, checkpoint)))
        self.config = load_config(self.config_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(root / "notify.sock"))
        self.notes: list[str] = []  # what systemd would have heard, read as it arrives
        threading.Thread(target=self._listen, daemon=True).start()
        plugins = install_crashy_plugin(root / "plugins")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(plugins), *sys.path]),
            "NOTIFY_SOCKET": str(root / "notify.sock"),
            "WATCHDOG_USEC": "1000000",
        }
        self.log_path = root / "daemon.log"
        self.process = start_sightd_run(self.config_path, self.log_path, env)

    @staticmethod
    def _config(video: Path, checkpoint: Path) -> dict:
        names = ("frames", "labels", "status", "status_in")
        endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in names}
        return {
            "cameras": [{"name": "cam0", "source": str(video), "fps": 10}],
            "transport": {**endpoints, "status_interval": 0.5},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "model": {"path": str(checkpoint), "device": "cpu", "reload": False},
            "events": {"stable_frames": 2},
            "subscribers": [{"type": "print", "topics": ["event"]}, {"type": "crashy"}],
            "daemon": {"max_restarts": 2, "restart_window": 30.0, "heartbeat_timeout": 2.0},
        }

    def processes(self) -> dict[str, int]:
        """title -> pid of every live process in the daemon's process group (from ps)."""
        out = subprocess.run(
            ["ps", "-e", "-o", "pid=,pgid=,stat=,args="], capture_output=True, text=True
        ).stdout
        found = {}
        for line in out.splitlines():
            pid, pgid, stat, args = line.split(None, 3)
            if int(pgid) == self.process.pid and not stat.startswith("Z"):
                found[args.strip()] = int(pid)
        return found

    def _listen(self) -> None:
        with contextlib.suppress(OSError):  # closed at the end
            while True:
                self.notes.append(self.notify.recv(4096).decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        """The end of the log, for failure messages."""
        return self.log()[-3000:]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # children too, if any is left
        self.process.wait(10)
        self.notify.shutdown(socket.SHUT_RDWR)
        self.notify.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, color_checkpoint):
    running = Daemon(tmp_path_factory.mktemp("daemon"), color_checkpoint)
    yield running
    running.kill()  # whatever happened: no process of the tree survives the module


def next_label(daemon: Daemon, timeout: float, after: float = 0.0) -> dict:
    """The first label inferred after `after` (UNIX time), or fail after `timeout` s.

    The socket retries its connection every 100 ms (sightd's own back off to 2 s), so what
    is measured is when the daemon labels again, not this reader's reconnect policy.
    """
    sock = transport.context().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
    sock.setsockopt(zmq.SUBSCRIBE, b"label.")
    sock.connect(daemon.config.transport.labels)
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if sock.poll(left * 1000):
                _, _, body = unpack_message(sock.recv_multipart())
                if body["inferred_at"] > after:
                    return body
    finally:
        sock.close()
    log = daemon.tail()
    raise AssertionError(f"no label within {timeout} s; daemon log ends:\n{log}")


def test_labels_flow_and_ps_names_every_process_by_its_job(daemon):
    # given `sightd run` on a video of blue, green and red frames
    # when labels are read from the bus
    label = next_label(daemon, timeout=60)

    # then they name the camera and one of the model's classes
    assert label["camera"] == "cam0"
    assert label["label"] in {"blue", "green", "red", "unknown"}
    # and `ps` tells the processes apart
    titles = daemon.processes()
    for title in ("sightd.supervisor", "sightd.capture:cam0", "sightd.infer"):
        assert title in titles, titles
    assert "sightd.subscriber:print" in titles, titles


def test_systemd_hears_ready_and_watchdog_pings(daemon):
    # given the daemon runs with NOTIFY_SOCKET and WATCHDOG_USEC set, as under systemd
    next_label(daemon, timeout=60)
    # when labels flow for a while
    wait_for(lambda: "WATCHDOG=1" in daemon.notes, 5, "a watchdog ping", daemon.tail)
    # then systemd was told READY=1 (once) before the first watchdog ping
    notes = daemon.notes
    assert notes.count("READY=1") == 1
    assert notes.index("READY=1") < notes.index("WATCHDOG=1")


def test_a_crash_looping_subscriber_is_given_up_while_labels_keep_flowing(daemon):
    # given a subscriber plugin that raises at every start (max_restarts: 2 in 30 s)
    # when the supervisor has restarted it twice and it failed a third time
    body = wait_for(lambda: _supervisor_status(daemon), 30, "status.supervisor", daemon.tail)
    body = wait_for(
        lambda: (b := _supervisor_status(daemon)) and b["given_up"] and b,
        30,
        "giving up",
        daemon.tail,
    )

    # then the status topic and the log say it was given up on, after 2 restarts
    assert body["given_up"] == ["subscriber:crashy"]
    assert body["children"]["subscriber:crashy"]["restarts"] == 2
    assert "subscriber:crashy exited with code 1; giving up on it" in daemon.log()
    # and the rest keeps running: new labels still arrive
    assert next_label(daemon, timeout=10, after=time.time())


def _supervisor_status(daemon: Daemon) -> dict | None:
    for message in subscribe("status", config=daemon.config, timeout=2):
        if message["component"] == "supervisor":
            return message
    return None


def test_status_shows_every_component_and_the_label(daemon):
    # given the running daemon, which has given up on the crashy subscriber
    next_label(daemon, timeout=60)
    wait_for(
        lambda: (b := _supervisor_status(daemon)) and b["given_up"], 30, "give-up", daemon.tail
    )
    # when the user asks for its status
    result = CliRunner().invoke(main, ["status", "-c", str(daemon.config_path), "--seconds", "2"])
    # then each component has a row with its state, and the camera's label is shown
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()}
    assert rows["capture:cam0"].split()[1] == "online"
    assert rows["infer"].split()[1] == "online"
    assert rows["subscriber:print"].split()[1] == "online"  # via the status forwarder
    assert rows["subscriber:crashy"].split()[1] == "given-up"
    assert re.search(r"^infer\s+online\s+\d+\.\d\s+\d+\s+\d+ ms", rows["infer"])
    assert re.search(r"^label cam0: (blue|green|red|unknown)$", result.output, re.M)


def test_a_worker_killed_with_sigkill_is_back_and_labels_resume_within_5_s(daemon):
    # given labels flowing
    next_label(daemon, timeout=60)
    old = daemon.processes()["sightd.infer"]

    # when the inference worker is killed with SIGKILL
    os.kill(old, signal.SIGKILL)
    killed_at = time.time()

    # then a new worker labels frames again within 5 s
    label = next_label(daemon, timeout=5, after=killed_at)
    assert label["camera"] == "cam0"
    assert daemon.processes()["sightd.infer"] != old


def test_a_capture_whose_heartbeat_stops_is_killed_and_restarted(daemon):
    # given labels flowing (heartbeat_timeout: 2 s)
    next_label(daemon, timeout=60)
    old = daemon.processes()["sightd.capture:cam0"]

    # when the capture freezes (SIGSTOP: like a read stuck in the driver)
    os.kill(old, signal.SIGSTOP)
    stopped_at = time.time()

    # then the supervisor kills it and starts a new one, and labels resume
    wait_for(
        lambda: daemon.processes().get("sightd.capture:cam0", old) != old,
        10,
        "restart",
        daemon.tail,
    )
    assert old not in daemon.processes().values()
    assert next_label(daemon, timeout=10, after=stopped_at + 2)
    assert "capture:cam0 heartbeat stopped; restarting" in daemon.log()


def test_sigterm_stops_the_whole_tree_within_10_s_with_exit_code_0(daemon):
    # given the running tree
    next_label(daemon, timeout=60)
    assert len(daemon.processes()) >= 4

    # when it gets SIGTERM
    began = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    code = daemon.process.wait(10)

    # then the supervisor exited 0 within 10 s, no process of its group is left, systemd heard
    assert code == 0, daemon.tail()
    wait_for(
        lambda: not daemon.processes(), 10 - (time.monotonic() - began), "orphans", daemon.tail
    )
    assert "STOPPING=1" in daemon.notes
    assert "sightd stopped" in daemon.log()


def test_sigterm_to_the_whole_process_group_is_a_stop_not_a_crash(tmp_path, color_checkpoint):
    # given a running tree (`timeout` and `kill -- -PGID` signal every process in it at once)
    daemon = Daemon(tmp_path, color_checkpoint)
    try:
        next_label(daemon, timeout=60)

        # when the whole group gets SIGTERM
        os.killpg(daemon.process.pid, signal.SIGTERM)

        # then the supervisor stops in order with exit code 0 and restarts nothing
        assert daemon.process.wait(10) == 0, daemon.tail()
        after_stop = daemon.log().split("stopping (SIGTERM)", 1)[1]
        assert "restarting" not in after_stop and "sightd stopped" in after_stop
    finally:
        daemon.kill()
