"""`mqtt`: labels, events and each camera's stable label on an MQTT broker (paho-mqtt 2.x).

Topics (prefix `sightd`):  sightd/<camera>/label, sightd/<camera>/event (JSON messages; no
event to unknown unless `labels` names it), sightd/<camera>/state (retained: the current
stable label, unknown included), sightd/availability (retained online/offline; the broker
publishes the Last Will "offline" if we vanish). With `discovery`, Home Assistant finds one
sensor per camera under homeassistant/sensor/<node_id>/<camera>/config.

The state and availability are published at QoS 0 and again on every (re)connect: a state
lost with a dropped connection is replaced by the current one, never by a stale queued one.
paho's network thread reconnects by itself, waiting reconnect_min..reconnect_max seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from typing import Any, ClassVar

import paho.mqtt.client as paho
from pydantic import Field

from sightd import __version__
from sightd.errors import SightdError
from sightd.subscribers.base import Subscriber, SubscriberConfig, Topic

_TOPIC_PART = r"^[^#+\s]+$"  # MQTT wildcards and spaces have no place in a topic prefix


class MqttConfig(SubscriberConfig):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="1883, or 8883 with TLS")
    username: str | None = None
    password_env: str | None = Field(None, description="env variable holding the password")
    tls: bool = Field(False, description="encrypt the connection; verifies the broker")
    ca_certs: str | None = Field(None, description="CA bundle for TLS; default: the system's")
    certfile: str | None = Field(None, description="client certificate for TLS, if required")
    keyfile: str | None = None
    client_id: str | None = Field(None, description="default: sightd-<node_id>-<pid>")
    topic_prefix: str = Field("sightd", pattern=_TOPIC_PART)
    qos: int = Field(0, ge=0, le=2, description="for label and event messages")
    keepalive: int = Field(30, ge=5, le=3600, description="seconds; a silent broker is left")
    reconnect_min: int = Field(1, ge=1, le=60, description="first reconnect wait, seconds")
    reconnect_max: int = Field(30, ge=1, le=3600, description="longest reconnect wait, seconds")
    discovery: bool = Field(False, description="announce sensors to Home Assistant")
    discovery_prefix: str = Field("homeassistant", pattern=_TOPIC_PART)
    node_id: str = Field("sightd", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="HA node id")


class MqttSubscriber(Subscriber):
    Config = MqttConfig
    config: MqttConfig
    default_topics: ClassVar[tuple[Topic, ...]] = ("label", "event", "status")
    example: ClassVar[dict[str, Any]] = {"host": "127.0.0.1", "port": 1883, "discovery": True}
    # It filters itself: the retained state must say "unknown" (it is state, not an action),
    # while the event topic, which automations trigger on, gets no unknown unless named.
    acts: ClassVar[bool] = False

    def start(self) -> None:
        cfg = self.config
        self.lock = threading.Lock()
        self.states: dict[str, str] = {}  # camera -> stable label, re-published on connect
        self.cameras: set[str] = set(self.context.cameras)
        self.connected = self.refused = self.closing = False
        self.counts = {"published": 0, "unsent": 0, "connects": 0}
        self.availability = f"{cfg.topic_prefix}/availability"
        client_id = cfg.client_id or f"sightd-{cfg.node_id}-{os.getpid()}"
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.will_set(self.availability, "offline", qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password())
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_certs, certfile=cfg.certfile, keyfile=cfg.keyfile)
            except (OSError, ValueError) as exc:
                raise SightdError(f"mqtt: cannot set up TLS: {exc}") from None
        client.reconnect_delay_set(cfg.reconnect_min, max(cfg.reconnect_min, cfg.reconnect_max))
        client.max_queued_messages_set(1000)  # QoS>0 while disconnected: bounded memory
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        client.connect_async(cfg.host, cfg.port, cfg.keepalive)
        client.loop_start()  # its thread connects, and reconnects with backoff

    def _password(self) -> str | None:
        name = self.config.password_env
        if name is None:
            return None
        if name not in os.environ:
            raise SightdError(f"mqtt: password_env names {name}, which is not set; export it")
        return os.environ[name]

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "status":
            self._adopt_states(message.get("labels"))
            return
        camera = message["camera"]
        self._discover(camera)
        if kind == "label" or self.acts_on(message):  # labels: every frame, as measured
            topic = f"{self.config.topic_prefix}/{camera}/{kind}"
            self._publish(topic, _json(message), self.config.qos)
        if kind == "event":
            self._set_state(camera, message["label"])

    def _adopt_states(self, labels: Any) -> None:
        """The worker's status carries every camera's stable label: catch up from it."""
        if isinstance(labels, dict):
            for camera, label in labels.items():
                if isinstance(camera, str) and isinstance(label, str):
                    self._discover(camera)
                    self._set_state(camera, label)

    def _set_state(self, camera: str, label: str) -> None:
        with self.lock:
            if self.states.get(camera) == label:
                return
            self.states[camera] = label
            if self.connected:
                self._publish(self._state_topic(camera), label, 0, retain=True)

    def _discover(self, camera: str) -> None:
        with self.lock:
            if camera in self.cameras:
                return
            self.cameras.add(camera)
            if self.connected and self.config.discovery:
                self._publish(*self._discovery(camera), 0, retain=True)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = True  # the disconnect that follows needs no second warning
            self.log.warning("mqtt: broker refused the connection: %s", reason_code)
            return
        self.log.info("mqtt: connected to %s:%d", self.config.host, self.config.port)
        with self.lock:
            self.connected = True
            self.counts["connects"] += 1
            self._publish(self.availability, "online", 1, retain=True)
            for camera in sorted(self.cameras) if self.config.discovery else []:
                self._publish(*self._discovery(camera), 0, retain=True)
            for camera, label in self.states.items():
                self._publish(self._state_topic(camera), label, 0, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.lock:
            was_connected, self.connected = self.connected, False
        refused, self.refused = self.refused, False
        if self.closing:
            return
        if was_connected:
            self.log.warning("mqtt: disconnected (%s); reconnecting", reason_code)
        elif not refused:  # e.g. a TLS broker that wants a client certificate closes early
            self._could_not_connect(f"closed before the broker accepted it: {reason_code}")

    def _on_connect_fail(self, client, userdata) -> None:
        self._could_not_connect("no connection: broker down, wrong host or port, or TLS failed")

    def _could_not_connect(self, why: str) -> None:
        cfg = self.config
        self.log.warning("mqtt: could not connect to %s:%d (%s); retrying", cfg.host, cfg.port, why)

    def _publish(self, topic: str, payload: str, qos: int, retain: bool = False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        ok = info.rc == paho.MQTT_ERR_SUCCESS
        self.counts["published" if ok else "unsent"] += 1
        return info

    def _state_topic(self, camera: str) -> str:
        return f"{self.config.topic_prefix}/{camera}/state"

    def _discovery(self, camera: str) -> tuple[str, str]:
        cfg, object_id = self.config, re.sub(r"[^A-Za-z0-9_-]", "_", camera)
        unique = f"{cfg.node_id}_{object_id}"
        config = {
            "name": "Label",
            "unique_id": f"{unique}_label",
            "state_topic": self._state_topic(camera),
            "json_attributes_topic": f"{cfg.topic_prefix}/{camera}/event",
            "availability_topic": self.availability,
            "icon": "mdi:cctv",
            "device": {
                "identifiers": [unique],
                "name": f"sightd {camera}",
                "manufacturer": "sightd",
                "sw_version": __version__,
            },
        }
        return f"{cfg.discovery_prefix}/sensor/{cfg.node_id}/{object_id}/config", _json(config)

    def state(self) -> str:
        return "online" if self.connected else "reconnecting"

    def figures(self) -> dict[str, Any]:
        figures = {**self.counts, "connected": self.connected}
        if not self.connected:
            figures["error"] = f"cannot reach the broker at {self.config.host}:{self.config.port}"
        return figures

    def close(self) -> None:
        """Say "offline" ourselves: a clean disconnect does not fire the Last Will."""
        if self.connected:
            info = self._publish(self.availability, "offline", 1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not sent: the Will says it
                info.wait_for_publish(2.0)
        self.closing = True  # our own disconnect is no news
        self.client.disconnect()
        self.client.loop_stop()


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
