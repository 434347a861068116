"""The deployed brokers refuse anonymous clients and let each account do only its job: the committed Mosquitto
configuration and ACL run on a real Mosquitto, with the password file made by docker-compose.yml's own commands."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.paths import REPO
from tests.support.services import free_port, wait_port

pytestmark = pytest.mark.integration

COMPOSE_CONF = REPO / "deploy" / "compose" / "mosquitto.conf"
COMPOSE_ACL = REPO / "deploy" / "compose" / "mosquitto.acl"
K8S_CONF = REPO / "k8s" / "overlays" / "local" / "datastores" / "mosquitto.conf"
K8S_ACL = REPO / "k8s" / "overlays" / "local" / "datastores" / "mosquitto.acl"
PASSWORDS = {"MQTT_INGEST_PASSWORD": "ingest-secret-1", "MQTT_DEVICE_PASSWORD": "device-secret-2"}


def directives(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    """Mosquitto on the compose configuration (its paths and listener moved into tmp_path)."""
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["mosquitto"]
    script = service["entrypoint"][-1].replace("$$", "$")
    # The entrypoint's own password-file commands; the image's ownership change and exec are the container's.
    commands = [
        line.replace("/mosquitto/auth", str(tmp_path))
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith(("chown", "exec"))
    ]
    subprocess.run(["/bin/sh", "-ec", "\n".join(commands)], env={**os.environ, **PASSWORDS}, check=True)
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0, "the password file is readable by others"
    port = free_port()
    conf = COMPOSE_CONF.read_text()
    conf = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    conf = conf.replace("/mosquitto/auth/passwd", str(tmp_path / "passwd"))
    conf = conf.replace("/mosquitto/config/mosquitto.acl", str(COMPOSE_ACL))
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/")
    conf = conf.replace("log_dest stdout", f"log_dest file {tmp_path}/mosquitto.log")
    if os.geteuid() == 0:  # stay root: the private folder is not reachable by the user it would switch to
        conf += "\nuser root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    process = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, process=process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


class Client:
    """A paho client that records its CONNACK and the messages it receives."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None) -> None:
        self.connected = threading.Event()
        self.reason: Any = None
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.reason = reason
        self.connected.set()

    @property
    def accepted(self) -> bool:
        return not self.reason.is_failure

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_anonymous_and_wrong_passwords_are_refused_and_each_account_does_only_its_job(broker: int) -> None:
    clients: list[Client] = []

    def connect(user: str | None = None, password: str | None = None) -> Client:
        client = Client(broker, user, password)
        clients.append(client)
        return client

    try:
        assert not connect().accepted  # anonymous
        assert not connect("pzone-ingest", "wrong").accepted
        assert not connect("pzone-device", PASSWORDS["MQTT_INGEST_PASSWORD"]).accepted
        ingest = connect("pzone-ingest", PASSWORDS["MQTT_INGEST_PASSWORD"])
        device = connect("pzone-device", PASSWORDS["MQTT_DEVICE_PASSWORD"])
        snoop = connect("pzone-device", PASSWORDS["MQTT_DEVICE_PASSWORD"])
        assert ingest.accepted and device.accepted and snoop.accepted
        ingest.subscribe("pzone/#")
        ingest.subscribe("other/#")
        snoop.subscribe("pzone/#")

        device.publish("pzone/zone-1/dev-1/tilt", b"reading")
        device.publish("pzone/zone-1/dev-1/status", b"online")
        device.publish("other/topic", b"not a sensor's")  # outside what a sensor may write
        device.publish("pzone/zone-1/dev-1/config", b"nor this")
        ingest.publish("pzone/zone-1/dev-9/tilt", b"forged by the worker")  # the worker only reads
        deadline = time.monotonic() + 5
        while len(ingest.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert sorted(ingest.messages) == [
            ("pzone/zone-1/dev-1/status", b"online"),
            ("pzone/zone-1/dev-1/tilt", b"reading"),
        ]
        assert snoop.messages == []  # a sensor reads nobody's readings
    finally:
        for client in clients:
            client.close()


@pytest.mark.unit
def test_the_compose_and_cluster_brokers_share_their_rules() -> None:
    assert directives(COMPOSE_ACL.read_text()) == directives(K8S_ACL.read_text())
    for conf in (COMPOSE_CONF, K8S_CONF):
        lines = directives(conf.read_text())
        assert "allow_anonymous false" in lines and "allow_anonymous true" not in lines, conf
        assert (
            "password_file /mosquitto/auth/passwd" in lines
            and "acl_file /mosquitto/config/mosquitto.acl" in lines
        )
