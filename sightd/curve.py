"""ZeroMQ CURVE: key files, and the socket options that make a socket a server or a client.

Layout of transport.keys_dir (written by `sightd keys generate`):
  server.key_secret   the server pair, read by every process that binds (keep it private)
  server.key          the server's public key, copied to every client machine
  <name>.key_secret   a client pair (default name: client)
  authorized/*.key    public keys of the clients that servers accept (ZAP authentication)
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from sightd.config import TransportConfig
from sightd.errors import SightdError

_authenticators: dict[int, ThreadAuthenticator] = {}  # one ZAP handler per context


def load_key_pair(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    hint = "create keys with `sightd keys generate` or fix transport.keys_dir"
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "unreadable"
        raise SightdError(f"CURVE key file {path} cannot be read ({reason}); {hint}") from None
    if need_secret and not secret:
        raise SightdError(f"CURVE key file {path} holds no secret key; {hint}")
    return public, secret


def make_server(sock: zmq.Socket, transport: TransportConfig) -> None:
    """Encrypt, and accept only clients whose public key is in keys_dir/authorized/."""
    keys = Path(transport.keys_dir)
    public, secret = load_key_pair(keys / "server.key_secret", need_secret=True)
    authorized = keys / "authorized"
    if not authorized.is_dir():
        raise SightdError(
            f"CURVE folder {authorized} does not exist; add client public keys there "
            "(`sightd keys generate` creates it)"
        )
    _start_authenticator(sock.context, authorized)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def make_client(sock: zmq.Socket, transport: TransportConfig) -> None:
    keys = Path(transport.keys_dir)
    server_public, _ = load_key_pair(keys / "server.key", need_secret=False)
    public, secret = load_key_pair(keys / f"{transport.client_key}.key_secret", need_secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def _start_authenticator(context: zmq.Context, authorized: Path) -> None:
    if id(context) in _authenticators:
        return
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized))
    _authenticators[id(context)] = auth


def generate_keys(keys_dir: Path, client_names: list[str], server: bool = True) -> list[Path]:
    """Write key pairs (secret files mode 0600); authorise each client with the server."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    authorized = keys_dir / "authorized"
    authorized.mkdir(exist_ok=True)
    written = []
    names = (["server"] if server else []) + client_names
    for name in names:
        if (keys_dir / f"{name}.key_secret").exists():
            raise SightdError(f"{keys_dir / name}.key_secret exists; remove it to replace it")
        old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            public_file, secret_file = zmq.auth.create_certificates(str(keys_dir), name)
        finally:
            os.umask(old_umask)
        os.chmod(public_file, 0o644)
        written += [Path(public_file), Path(secret_file)]
        if name != "server":
            authorized_copy = authorized / f"{name}.key"
            authorized_copy.write_bytes(Path(public_file).read_bytes())
            written.append(authorized_copy)
    return written
