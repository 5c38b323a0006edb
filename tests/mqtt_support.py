"""A real mosquitto broker and a paho reader for tests: the mqtt subscriber's own tests and the
fault tests (broker down, broker restarted) share them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import paho.mqtt.client as paho
from conftest import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # .ci/run installs it


class Broker:
    """mosquitto on a free port, without persistence: a restart forgets retained messages."""

    def __init__(
        self,
        folder,
        users: dict[str, str] | None = None,
        tls: bool = False,
        client_certificates: bool = False,
    ):
        self.folder, self.port, self.process = folder, free_port(), None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "user root"]
        if tls or client_certificates:
            self.cert, self.key = make_certificate(folder), str(folder / "key.pem")
            lines += [f"certfile {self.cert}", f"keyfile {self.key}"]
        if client_certificates:  # only clients with a certificate this CA signed get in
            lines += [f"cafile {self.cert}", "require_certificate true"]
        if users:
            passwords = folder / "passwords"
            passwords.write_text("".join(f"{name}:{pw}\n" for name, pw in users.items()))
            passwords.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        log = open(self.folder / "mosquitto.log", "a")  # noqa: SIM115 - the broker owns it
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)

        def accepting():
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(accepting, timeout=10, what="mosquitto to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def make_certificate(folder) -> str:
    """A self-signed certificate for 127.0.0.1 that is also its own CA."""
    cert = folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(folder / "key.pem"), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert)


class Reader:
    """A paho client subscribed to everything, keeping what arrives (retained flag included)."""

    def __init__(
        self, port: int, username=None, password=None, ca_certs=None, certfile=None, keyfile=None
    ):
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        if username:
            self.client.username_pw_set(username, password)
        if ca_certs:
            self.client.tls_set(ca_certs=ca_certs, certfile=certfile, keyfile=keyfile)
        self.client.on_connect = lambda client, *_: client.subscribe("#")
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _keep(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def last(self, topic: str) -> tuple[str, bool] | None:
        with self.lock:
            found = [(payload, retain) for t, payload, retain in self.messages if t == topic]
        return found[-1] if found else None

    def wait(self, topic: str, payload=None, timeout: float = 10.0) -> tuple[str, bool]:
        def arrived():
            last = self.last(topic)
            return last if last and (payload is None or last[0] == payload) else None

        return wait_for(arrived, timeout, what=f"{topic} = {payload}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
