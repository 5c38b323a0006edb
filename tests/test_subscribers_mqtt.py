"""The mqtt subscriber against a real mosquitto started here, read back by a real paho client:
label and event topics, retained state, availability with its Last Will, Home Assistant
discovery, credentials, and the retained state restored after the broker restarts."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
from conftest import wait_for
from mqtt_support import Broker, Reader
from subscriber_harness import Bus


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


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl makes the test certificate")
def test_mqtt_logs_in_with_a_client_certificate_where_the_broker_demands_one(
    config_file, subscribers, broker
):
    # given a broker that lets in only clients with a certificate its CA signed (the test CA
    # signs itself, so its own certificate and key serve as the client's too)
    mosquitto = broker(client_certificates=True)
    tls = {"type": "mqtt", "port": mosquitto.port, "tls": True, "ca_certs": mosquitto.cert}
    entry = {**tls, "certfile": mosquitto.cert, "keyfile": mosquitto.key}
    stranger = {**tls, "client_id": "sightd-stranger"}  # TLS, but no certificate to show
    path = config_file(subscribers=[entry, stranger])
    reader = Reader(mosquitto.port, ca_certs=mosquitto.cert, certfile=mosquitto.cert,
                    keyfile=mosquitto.key)  # fmt: skip
    with Bus(path) as bus:
        subscribers.start(path, "mqtt.0")
        stranger_process = subscribers.start(path, "mqtt.1")
        bus.wait_subscriptions(6)
        # when an event arrives, then it reaches the broker from the subscriber with the
        # certificate, while the one without is turned away and its status says so
        bus.status_of("subscriber:mqtt.0", lambda body: body["state"] == "online")
        bus.event("thumbs_up")
        reader.wait("sightd/cam0/state", "thumbs_up")
        bus.status_of("subscriber:mqtt.1", lambda body: body["state"] == "reconnecting")
        wait_for(lambda: "could not connect" in stranger_process.err_path.read_text())
    reader.close()


def test_mqtt_state_says_unknown_but_no_event_announces_it(config_file, subscribers, broker):
    # given an mqtt subscriber whose camera's stable label is thumbs_up
    mosquitto = broker()
    path = config_file(subscribers=[{"type": "mqtt", "port": mosquitto.port}])
    reader = Reader(mosquitto.port)
    with Bus(path) as bus:
        subscribers.start(path, "mqtt")
        bus.wait_subscriptions(3)
        bus.status_of("subscriber:mqtt", lambda body: body["state"] == "online")
        bus.event("thumbs_up")
        reader.wait("sightd/cam0/state", "thumbs_up")
        # when nothing is recognised any more: unknown labels, and the stable label unknown
        bus.label("unknown", confidence=0.3)
        bus.event("unknown", previous="thumbs_up", confidence=0.3)
        # then the retained state says so honestly, and the label topic carries the frame
        reader.wait("sightd/cam0/state", "unknown")
        assert json.loads(reader.wait("sightd/cam0/label")[0])["label"] == "unknown"
        bus.status_of("subscriber:mqtt", lambda body: body["received"] == 3)
    # but the event topic, which automations trigger on, announced thumbs_up only
    events = [
        json.loads(payload) for topic, payload, _ in reader.messages if topic.endswith("event")
    ]
    assert [event["label"] for event in events] == ["thumbs_up"]
    reader.close()
