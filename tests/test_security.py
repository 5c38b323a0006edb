"""CURVE encryption and authentication, key files, private ipc folders: real sockets."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner
from conftest import free_port

from sightd import transport as bus
from sightd.cli import main
from sightd.config import TransportConfig
from sightd.curve import generate_keys
from sightd.errors import SightdError


def curve_transport(keys_dir: Path, client: str = "client", curve: bool = True):
    return TransportConfig(curve=curve, keys_dir=str(keys_dir), client_key=client)


def received(sub: zmq.Socket, pub: zmq.Socket, seconds: float = 1.5) -> list[bytes]:
    """Publish for a while (joins are slow) and collect what the subscriber got."""
    got, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.send_multipart([b"label.cam0", b"secret"])
        if sub.poll(50):
            got.append(sub.recv_multipart()[1])
    return got


@pytest.fixture
def keys(tmp_path):
    keys_dir = tmp_path / "keys"
    generate_keys(keys_dir, ["client"])
    generate_keys(tmp_path / "other", ["intruder"])  # a valid pair the server never authorised
    (keys_dir / "intruder.key_secret").write_bytes(
        (tmp_path / "other/intruder.key_secret").read_bytes()
    )
    return keys_dir


def test_generated_secret_files_are_private(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["keys", "generate", "--dir", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    for secret in (tmp_path / "k").glob("*.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (tmp_path / "k/authorized/client.key").exists()


def test_authorised_client_receives_over_curve(keys):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = bus.bind_publisher(endpoint, curve_transport(keys))
    sub = bus.connect_subscriber([endpoint], [b"label"], curve_transport(keys))
    try:
        assert b"secret" in received(sub, pub)
    finally:
        pub.close()
        sub.close()


@pytest.mark.parametrize("client", ["intruder", None])
def test_unauthorised_or_plain_client_receives_nothing(keys, client):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = bus.bind_publisher(endpoint, curve_transport(keys))
    if client is None:
        sub = bus.connect_subscriber([endpoint], [b"label"], curve_transport(keys, curve=False))
    else:
        sub = bus.connect_subscriber([endpoint], [b"label"], curve_transport(keys, client))
    try:
        assert received(sub, pub) == []
    finally:
        pub.close()
        sub.close()


def test_missing_key_file_stops_start_up_with_a_clear_error(tmp_path):
    with pytest.raises(
        SightdError, match=r"server.key_secret cannot be read.*sightd keys generate"
    ):
        bus.bind_publisher(f"tcp://127.0.0.1:{free_port()}", curve_transport(tmp_path / "none"))


def test_ipc_endpoint_folder_is_private(tmp_path):
    folder = tmp_path / "run" / "sightd"
    pub = bus.bind_publisher(f"ipc://{folder}/labels", TransportConfig())
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        pub.close()


@pytest.mark.parametrize("client", ["intruder", None])
def test_a_refused_client_is_told_why_it_hears_nothing(keys, client):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = bus.bind_publisher(endpoint, curve_transport(keys))
    side = curve_transport(keys, curve=False) if client is None else curve_transport(keys, client)
    sub = bus.connect_subscriber([], [b"label"], side)
    reconnector = bus.Reconnector(sub, [endpoint])
    try:
        received(sub, pub)
        reconnector.poll()
        # what `sightd listen` and subscribe() warn after a quiet while
        expected = "the handshake failed" if client is None else "its keys were refused"
        assert reconnector.why_quiet(endpoint).startswith(expected)
    finally:
        reconnector.close()
        pub.close()
        sub.close()
