"""The supervisor's mechanics, with tiny child programs instead of the real pipeline.

The targets below run in real child processes (spawned: they import this module by name), so
restarts, the watchdog, stopping and orphan handling are exercised exactly as in `sightd run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from conftest import wait_for

from sightd.config import load_config
from sightd.daemon.child import ChildSpec
from sightd.daemon.supervisor import Supervisor
from sightd.protocol import unpack_message
from sightd.transport import connect_subscriber

# ---- child programs (run inside spawned processes) ----------------------------------------


def beat_until_stopped(config, pid_file, runtime):
    Path(pid_file).write_text(str(os.getpid()))
    while not runtime.stop.is_set():
        runtime.beat()
        runtime.stop.wait(0.05)
    with open(Path(pid_file).with_suffix(".stopped"), "a") as log:
        log.write(f"{runtime.name}\n")


def crash_at_start(config, runtime):
    raise RuntimeError("this child always crashes")


def refuse_the_config(config, runtime):
    from sightd.errors import SightdError

    raise SightdError("cannot bind tcp://127.0.0.1:1: Address already in use")


def hang_after_a_beat(config, pid_file, runtime):
    """Like a camera read stuck in the driver: alive, but silent."""
    with open(pid_file, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    runtime.beat()
    time.sleep(3600)


def ignore_stop(config, runtime):
    while True:
        runtime.beat()
        time.sleep(0.05)


# ---- helpers -------------------------------------------------------------------------------


@pytest.fixture
def supervise(config_file):
    """Start a Supervisor on the given specs in a thread; always stopped at the end."""
    running = []

    def start(specs, **daemon):
        config = load_config(config_file(daemon=daemon))
        supervisor = Supervisor(config, specs)
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return supervisor, stop, thread

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(30)


def read(path: Path) -> str:
    """The file's text, or "" while the child has not written it yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def spec(name, target, *args, group="subscribers"):
    return ChildSpec(name, f"test_daemon_supervisor:{target}", args, group)


# ---- tests ---------------------------------------------------------------------------------


def test_a_crash_looping_child_is_given_up_while_the_others_keep_running(supervise, tmp_path):
    # given a healthy child and one that crashes at every start, at most 2 restarts per 30 s
    pid_file = tmp_path / "healthy.pid"
    specs = [spec("healthy", "beat_until_stopped", str(pid_file)), spec("broken", "crash_at_start")]
    supervisor, _, _ = supervise(specs, max_restarts=2, restart_window=30.0)
    status = connect_subscriber(
        [supervisor.config.transport.status], [b"status.supervisor"], supervisor.config.transport
    )
    healthy, broken = supervisor.children
    first_pid = int(wait_for(lambda: read(pid_file), 15, "the healthy child"))

    # when the broken child has failed three times
    wait_for(lambda: broken.state == "given-up", 20, "the supervisor to give up")

    # then it was restarted twice (with backoff) and given up; the healthy one never restarted
    assert broken.restarts == 2
    assert healthy.state == "running" and healthy.pid == first_pid and healthy.restarts == 0
    # and the status topic says so
    assert status.poll(5000)
    body = wait_for(lambda: _given_up(status), 5, "status.supervisor naming the given-up child")
    assert body["given_up"] == ["broken"]
    assert body["children"]["healthy"]["state"] == "running"
    status.close()


def _given_up(sock):
    while sock.poll(500):
        _, _, body = unpack_message(sock.recv_multipart(zmq.NOBLOCK))
        if body.get("given_up"):
            return body
    return None


def test_a_child_whose_heartbeat_stops_is_killed_and_restarted(supervise, tmp_path):
    # given a child that beats once and then hangs, and a 1 s heartbeat timeout
    pid_file = tmp_path / "hung.pids"
    supervisor, _, _ = supervise(
        [spec("hung", "hang_after_a_beat", str(pid_file))], heartbeat_timeout=1.0, stop_timeout=1.0
    )
    first = int(
        wait_for(lambda: pid_file.exists() and pid_file.read_text().split(), 15, "start")[0]
    )

    # when its heartbeat is older than the timeout
    pids = wait_for(lambda: read(pid_file).split()[1:], 10, "a second incarnation")

    # then the hung process was killed and a new one started in its place
    assert int(pids[0]) != first
    wait_for(lambda: not alive(first), 3, "the hung process to be gone")
    assert supervisor.children[0].restarts >= 1
    assert "heartbeat" in supervisor.children[0].last_failure


def test_stop_undoes_start_in_reverse_and_kills_what_does_not_stop(supervise, tmp_path):
    # given a capture, a worker and a subscriber that stop when asked, and one that never does
    files = {name: tmp_path / f"{name}.pid" for name in ("capture", "worker", "subscriber")}
    specs = [
        spec("capture", "beat_until_stopped", str(files["capture"]), group="captures"),
        spec("worker", "beat_until_stopped", str(files["worker"]), group="worker"),
        spec("subscriber", "beat_until_stopped", str(files["subscriber"])),
        spec("stubborn", "ignore_stop"),
    ]
    supervisor, stop, thread = supervise(specs, stop_timeout=2.0)
    for path in files.values():
        wait_for(lambda path=path: read(path), 15, f"{path.stem} to start")
    stubborn_pid = wait_for(lambda: supervisor.children[3].pid, 5, "the stubborn child")

    # when the supervisor is asked to stop
    began = time.monotonic()
    stop.set()
    thread.join(10)

    # then it finished within stop_timeout: subscribers first, captures last, stubborn killed
    assert not thread.is_alive()
    assert time.monotonic() - began < 2.0 + 1.0
    stopped_at = {n: p.with_suffix(".stopped").stat().st_mtime_ns for n, p in files.items()}
    assert stopped_at["subscriber"] <= stopped_at["worker"] <= stopped_at["capture"]
    assert not alive(stubborn_pid)
    assert all(c.state == "stopped" for c in supervisor.children)


SUPERVISOR_SCRIPT = """
import sys, threading
from sightd.config import load_config
from sightd.daemon.child import ChildSpec
from sightd.daemon.supervisor import Supervisor
target = "test_daemon_supervisor:beat_until_stopped"
specs = [ChildSpec(f"child{i}", target, (f"{sys.argv[2]}{i}",)) for i in range(2)]
Supervisor(load_config(sys.argv[1]), specs).run(threading.Event())
"""


def test_children_die_with_a_killed_supervisor_and_show_their_job_in_ps(config_file, tmp_path):
    # given a supervisor process with two children
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    prefix = str(tmp_path / "pid")
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, str(config_file()), prefix],
        env=env,
        start_new_session=True,
    )
    try:
        paths = [Path(f"{prefix}{i}") for i in range(2)]
        wait_for(lambda: all(read(p) for p in paths), 20, "both children")
        pids = [int(p.read_text()) for p in paths]
        titles = [_process_title(pid) for pid in pids]

        # when the supervisor is killed with SIGKILL (no chance to clean up)
        supervisor.kill()
        supervisor.wait(5)

        # then its children are gone too, and while they lived ps named them by their job
        wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the children to die")
        assert titles == ["sightd.child0", "sightd.child1"]
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait(5)


def _process_title(pid: int) -> str:
    out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return out.stdout.strip()


def test_the_supervisor_returns_only_when_the_fork_server_is_gone_too(supervise, tmp_path):
    from multiprocessing import forkserver

    # given a running child, forked by multiprocessing's fork server
    pid_file = tmp_path / "child.pid"
    _, stop, thread = supervise([spec("child", "beat_until_stopped", str(pid_file))])
    child_pid = int(wait_for(lambda: read(pid_file), 15, "the child"))
    server_pid = forkserver._forkserver._forkserver_pid
    assert server_pid and alive(server_pid)
    # when it is asked to stop, then by the time it returns nothing it started is left
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert not alive(child_pid) and not alive(server_pid)


def test_a_child_stopped_by_a_user_error_is_given_up_at_once(supervise, tmp_path):
    # given a child that exits with a one-line user error (a taken port, a bad model file)
    specs = [spec("refusing", "refuse_the_config")]
    supervisor, _, _ = supervise(specs, max_restarts=5, restart_window=60.0)
    (child,) = supervisor.children
    # then it is not restarted five times to print the same error: a restart would not help
    wait_for(lambda: child.state == "given-up", 20, "the supervisor to give up")
    assert child.restarts == 0 and "error in the config" in child.last_failure


def test_off_the_hub_a_supervisor_binds_no_bus_and_is_ready_once_its_children_beat(
    config_file, tmp_path, monkeypatch
):
    import socket

    from sightd.daemon.roles import Plan
    from sightd.transport import bind

    # given systemd listening, and a camera host's supervisor (the hub is elsewhere)
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = load_config(config_file())
    pid_file = tmp_path / "capture.pid"
    specs = [spec("capture:cam0", "beat_until_stopped", str(pid_file), group="captures")]
    supervisor = Supervisor(config, specs, plan=Plan(frozenset({"capture"})))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # when its child beats, then it is ready, with no worker to wait for, and systemd
        # hears READY and then watchdog pings while the capture runs
        wait_for(lambda: supervisor.ready, 20, "the supervisor to be ready")
        assert supervisor.name == "supervisor:capture"
        systemd.settimeout(10)
        heard = [systemd.recv(100).decode() for _ in range(3)]
        assert "READY=1" in heard and "WATCHDOG=1" in heard, heard
        # and the status bus's endpoints are free for the hub to bind
        transport = config.transport
        for endpoint in (transport.status_in, transport.status):
            bind(zmq.XSUB, endpoint, transport).close()
    finally:
        stop.set()
        thread.join(30)
        systemd.close()
    assert read(pid_file.with_suffix(".stopped")) == "capture:cam0\n"
