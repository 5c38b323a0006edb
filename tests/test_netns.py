"""A deployment across hosts, each host a Linux network namespace: CURVE over real TCP.

Two camera hosts, a GPU-worker host, a hub (subscribers, status bus, labels proxy) and a
stranger, each in its own namespace with a veth to a bridge in a sixth ("switch") namespace.
Addresses (10.231.0.x) exist only inside the namespaces and the switch has no uplink, so no
packet leaves them; everything is deleted at the end, even when the test fails. Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for
from daemon_support import colour_video
from deploy_support import Hosts, MessageLog, write_config

from sightd.curve import generate_keys

pytestmark = pytest.mark.slow
HOSTS = {"cama": 1, "camb": 2, "gpu": 3, "hub": 4, "stranger": 5}  # name -> 10.231.0.<n>


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Network:
    """The namespaces of one test run; their names carry this process's pid, so that runs at
    the same time (other engineers, CI jobs) never meet."""

    def __init__(self) -> None:
        self.tag = f"sd{os.getpid() % 100000}"
        self.switch = f"{self.tag}-switch"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"10.231.0.{HOSTS[host]}"

    def build(self) -> None:
        self._add(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host, number in HOSTS.items():
            ns, inside, outside = self.ns(host), f"eth{number}", f"{self.tag}p{number}"
            self._add(ns)
            ip(
                "link",
                "add",
                inside,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                outside,
                "netns",
                self.switch,
            )
            ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", inside)
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        """Kill what runs inside, then delete every namespace (their veths go with them)."""
        for ns in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def _add(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)


@pytest.fixture
def network():
    if os.geteuid() != 0:
        pytest.skip("needs root: creating network namespaces (ip netns) takes CAP_SYS_ADMIN")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` (ip netns) to create network namespaces")
    net = Network()
    try:
        try:
            net.build()
        except RuntimeError as exc:
            pytest.skip(f"cannot create network namespaces here: {exc}")
        yield net
    finally:
        net.destroy()


STRANGER = """
import json, sys
import zmq, zmq.auth
from zmq.utils.monitor import recv_monitor_message
keys_dir, server_key, *endpoints = sys.argv[1:]
context = zmq.Context()
sockets = []
for curve in (True, False):  # a key the servers do not know, and no CURVE at all
    sock = context.socket(zmq.SUB)
    if curve:
        sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(
            keys_dir + "/stranger.key_secret")
        sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sockets.append((sock, sock.get_monitor_socket()))
    for endpoint in endpoints:
        sock.connect(endpoint)
poller = zmq.Poller()
poller.register(sys.stdin, zmq.POLLIN)
for sock, monitor in sockets:
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
received, events = 0, set()
print("listening", flush=True)
while True:
    ready = dict(poller.poll(1000))
    if sys.stdin.fileno() in ready or sys.stdin in ready:
        break
    for sock, monitor in sockets:
        while sock in ready and sock.poll(0):
            sock.recv_multipart()
            received += 1
        while monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            events.add(zmq.Event(event).name)
print(json.dumps({"received": received, "events": sorted(events)}), flush=True)
"""


def deployment(tmp_path: Path, net: Network, checkpoint: Path) -> tuple[Path, Path]:
    """One config for every host, CURVE on; returns it and the log the hub's subscriber writes."""
    keys = tmp_path / "keys"
    generate_keys(keys, ["client"])
    generate_keys(tmp_path / "stranger-keys", ["stranger"], server=False)
    video = colour_video(tmp_path / "colours.avi")
    hub = net.address("hub")
    log = tmp_path / "messages.jsonl"
    config = {
        "cameras": [
            {"name": "cam0", "source": str(video), "fps": 5},
            {"name": "cam1", "source": str(video), "fps": 5},
        ],
        "transport": {
            "curve": True,
            "keys_dir": str(keys),
            "labels": f"tcp://{hub}:5551",
            "status": f"tcp://{hub}:5552",
            "status_in": f"tcp://{hub}:5553",
            "labels_in": f"tcp://{hub}:5554",
            "status_interval": 0.5,
        },
        "workers": [{"name": "gpu", "cameras": ["cam0", "cam1"]}],
        "model": {"path": str(checkpoint), "device": "cpu", "reload": False},
        "subscribers": [{"type": "log", "path": str(log), "topics": ["label", "status"]}],
        "http": {"enabled": False},
    }
    config["cameras"][0]["endpoint"] = f"tcp://{net.address('cama')}:5550"
    config["cameras"][1]["endpoint"] = f"tcp://{net.address('camb')}:5550"
    return write_config(tmp_path / "config.yaml", config), log


def test_a_deployment_over_curve_tcp_across_namespaces(tmp_path, network, color_checkpoint):
    # given one config: cam0 on host A, cam1 on host B, the worker on gpu, subscribers on hub
    config, log = deployment(tmp_path, network, color_checkpoint)
    roles = {
        "hub": ["--role", "subscribers"],
        "gpu": ["--role", "infer"],
        "cama": ["--role", "capture", "--camera", "cam0"],
        "camb": ["--role", "capture", "--camera", "cam1"],
    }
    hosts = Hosts()
    try:
        started = {
            name: hosts.start(tmp_path, name, config, args, netns=network.ns(name))
            for name, args in roles.items()
        }
        messages = MessageLog(log)
        # when every host runs its part, then both cameras' labels reach the hub's subscriber
        for camera in ("cam0", "cam1"):
            messages.wait_labels(camera, 3, 0.0, 180, hosts.tails)

        # and a stranger on the same network, with a key nobody authorised or with no CURVE at
        # all, reaches the hub's labels and camera A's frames but receives nothing
        endpoints = [
            f"tcp://{network.address('hub')}:5551",
            f"tcp://{network.address('cama')}:5550",
        ]
        stranger = subprocess.Popen(
            ["ip", "netns", "exec", network.ns("stranger"), sys.executable, "-c", STRANGER]
            + [str(tmp_path / "stranger-keys"), str(tmp_path / "keys" / "server.key"), *endpoints],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert stranger.stdout.readline().strip() == "listening"
            began = time.time()
            for camera in ("cam0", "cam1"):  # while it listens, labels keep flowing
                messages.wait_labels(camera, 5, began, 60, hosts.tails)
            out, _ = stranger.communicate("stop\n", timeout=30)
        finally:
            stranger.kill()
        heard = json.loads(out)
        assert heard["received"] == 0
        # it got through to the servers (TCP connected) and was refused there, by its key
        assert {"CONNECTED", "HANDSHAKE_FAILED_AUTH"} <= set(heard["events"]), heard

        # when camera host A's supervisor is killed (SIGKILL: no chance to clean up)
        started["cama"].kill(group=False)
        wait_for(lambda: not started["cama"].group(), 20, "host A's parts to die with it")
        gone = time.time()

        # then cam1 keeps labelling, cam0 has nothing captured after, the other hosts live on
        messages.wait_labels("cam1", 5, gone, 60, hosts.tails)
        assert messages.labels("cam0", gone) == []
        assert all(started[h].process.poll() is None for h in ("hub", "gpu", "camb"))
    finally:
        hosts.close()
