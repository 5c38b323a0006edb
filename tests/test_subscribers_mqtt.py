"""The mqtt subscriber against a real mosquitto started here, read back by a real paho client:
label and event topics, retained state, availability with its Last Will, Home Assistant
discovery, credentials, and the retained state restored after the broker restarts."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading

import paho.mqtt.client as paho
import pytest
from conftest import free_port
from subscriber_harness import Bus, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # .ci/run installs it


class Broker:
    """mosquitto on a free port, without persistence: a restart forgets retained messages."""

    def __init__(self, folder, users: dict[str, str] | None = None, tls: bool = False):
        self.folder, self.port, self.process = folder, free_port(), None
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "user root"]
        if tls:
            self.cert = make_certificate(folder)
            lines += [f"certfile {self.cert}", f"keyfile {folder / 'key.pem'}"]
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

    def __init__(self, port: int, username=None, password=None, ca_certs: str | None = None):
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        if username:
            self.client.username_pw_set(username, password)
        if ca_certs:
            self.client.tls_set(ca_certs=ca_certs)
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


@pytest.fixture
def broker(tmp_path):
    made = []

    def make(**kwargs) -> Broker:
        made.append(Broker(tmp_path, **kwargs))
        made[-1].start()
        return made[-1]

    yield make
    for each in made:
        each.stop()


def test_mqtt_publishes_labels_events_state_availability_and_discovery(
    config_file, subscribers, broker
):
    # given a broker that wants a password, and an mqtt subscriber with discovery on
    mosquitto = broker(users={"sightd": "pw-1"})
    entry = {"type": "mqtt", "port": mosquitto.port, "username": "sightd"}
    entry |= {"password_env": "SIGHTD_TEST_MQTT_PASSWORD", "discovery": True}
    intruder = {**entry, "password_env": "SIGHTD_TEST_MQTT_WRONG"}
    path = config_file(subscribers=[entry, intruder])
    env = {"SIGHTD_TEST_MQTT_PASSWORD": "pw-1", "SIGHTD_TEST_MQTT_WRONG": "guess"}
    reader = Reader(mosquitto.port, "sightd", "pw-1")
    with Bus(path) as bus:
        process = subscribers.start(path, "mqtt.0", env=env)
        refused = subscribers.start(path, "mqtt.1", env=env)
        bus.wait_subscriptions(6)
        # then a wrong password is refused, logged, and the status says so
        bus.status_of("subscriber:mqtt.1", lambda body: body["state"] == "reconnecting")
        wait_for(lambda: "broker refused the connection" in refused.err_path.read_text())
        # then it announces itself and the configured camera to Home Assistant
        reader.wait("sightd/availability", "online")
        sensor = json.loads(reader.wait("homeassistant/sensor/sightd/cam0/config")[0])
        assert sensor["state_topic"] == "sightd/cam0/state"
        assert sensor["availability_topic"] == "sightd/availability"
        assert sensor["unique_id"] == "sightd_cam0_label"
        # when a label and an event arrive
        bus.label("thumbs_up", confidence=0.97)
        bus.event("thumbs_up", previous="fist", confidence=0.97)
        # then they are published as JSON, and the stable label as retained state
        label = json.loads(reader.wait("sightd/cam0/label")[0])
        assert (label["kind"], label["label"], label["confidence"]) == ("label", "thumbs_up", 0.97)
        event = json.loads(reader.wait("sightd/cam0/event")[0])
        assert (event["label"], event["previous"]) == ("thumbs_up", "fist")
        reader.wait("sightd/cam0/state", "thumbs_up")
        # and the worker's status brings a camera it had not seen, state and sensor
        bus.worker_status({"cam1": "fist"})
        reader.wait("sightd/cam1/state", "fist")
        reader.wait("homeassistant/sensor/sightd/cam1/config")
        # and a client arriving later is handed all of it as retained messages
        late = Reader(mosquitto.port, "sightd", "pw-1")
        assert late.wait("sightd/cam0/state") == ("thumbs_up", True)
        assert late.wait("sightd/cam1/state") == ("fist", True)
        assert late.wait("sightd/availability") == ("online", True)
        assert late.wait("homeassistant/sensor/sightd/cam1/config")[1] is True
        assert late.last("sightd/cam0/label") is None  # labels are not retained
        late.close()
        # when the subscriber is killed outright, the broker publishes its Last Will
        process.send_signal(signal.SIGKILL)
        assert reader.wait("sightd/availability", "offline") == ("offline", False)
    reader.close()


def test_mqtt_restores_the_retained_state_after_the_broker_restarts(
    config_file, subscribers, broker
):
    # given a subscriber connected to a broker that keeps nothing across restarts
    mosquitto = broker()
    entry = {"type": "mqtt", "port": mosquitto.port, "reconnect_min": 1, "reconnect_max": 2}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        process = subscribers.start(path, "mqtt")
        bus.wait_subscriptions(3)
        bus.status_of("subscriber:mqtt", lambda body: body["state"] == "online")
        bus.event("a")
        reader = Reader(mosquitto.port)
        reader.wait("sightd/cam0/state", "a")
        reader.close()
        # when the broker goes away, the label changes meanwhile, and the broker comes back
        mosquitto.stop()
        bus.status_of("subscriber:mqtt", lambda body: body["state"] == "reconnecting")
        bus.event("b", previous="a")
        bus.status_of("subscriber:mqtt", lambda body: body["delivered"] == 2)
        mosquitto.start()
        # then the subscriber reconnects and the broker holds the current state again
        bus.status_of("subscriber:mqtt", lambda body: body["connects"] == 2, timeout=15)
        reader = Reader(mosquitto.port)
        assert reader.wait("sightd/cam0/state") == ("b", True)
        assert reader.wait("sightd/availability") == ("online", True)
        reader.close()
        # and a clean stop says offline itself (a clean disconnect fires no Last Will)
        assert subscribers.stop(process) == 0
        reader = Reader(mosquitto.port)
        assert reader.wait("sightd/availability", "offline") == ("offline", True)
        reader.close()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl makes the test certificate")
def test_mqtt_speaks_tls_to_a_broker_it_trusts(config_file, subscribers, broker):
    # given a broker that only speaks TLS, with a certificate the subscriber is told to trust
    mosquitto = broker(tls=True)
    entry = {"type": "mqtt", "port": mosquitto.port, "tls": True, "ca_certs": mosquitto.cert}
    path = config_file(subscribers=[entry])
    reader = Reader(mosquitto.port, ca_certs=mosquitto.cert)
    with Bus(path) as bus:
        subscribers.start(path, "mqtt")
        bus.wait_subscriptions(3)
        # when an event arrives, then it reaches the broker over TLS
        bus.status_of("subscriber:mqtt", lambda body: body["state"] == "online")
        bus.event("thumbs_up")
        reader.wait("sightd/cam0/state", "thumbs_up")
    reader.close()
