"""A box marked "not an animal" reaches its own trap, and only its own, through a real Mosquitto
with the generated ACL: the server publishes the camera's memory retained on cmd/ignore-regions."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import select

from tests.server.clustering.conftest import Fleet
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import IgnoreRegionsCommand, parse_payload
from trapline.edge.ignore_regions import IgnoreRegionMemory
from trapline.server.db import transaction
from trapline.server.learning.labels import NOT_AN_ANIMAL, label_crops
from trapline.server.learning.negatives import run_ignore_regions_job
from trapline.server.models import Detection, DetectionFrame, Job
from trapline.server.security import write_mosquitto_auth

DEVICES = {"trap-jaguar": "pw-jaguar", "trap-buow": "pw-buow"}


class Trap:
    """A trap's MQTT session with its own credentials, subscribed to `topics`."""

    def __init__(self, port: int, user: str, topics: list[str]) -> None:
        self.received: list[tuple[str, bytes, bool]] = []
        self.granted: list[Any] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, DEVICES[user])
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.granted.extend(codes)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while len(self.granted) < len(topics) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.granted) == len(topics), "subscriptions not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_ignore_list_reaches_its_trap_only(fleet: Fleet, tmp_path: Path) -> None:
    passwd, acl = write_mosquitto_auth(
        tmp_path / "auth", "trapline", devices=DEVICES, server_users={"learning": "pw-learning"}
    )
    config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with transaction(fleet.sessions) as session:
        stump = session.scalars(
            select(Detection).join(DetectionFrame).where(DetectionFrame.device_id == "trap-jaguar").limit(1)
        ).one()
        label_crops(session, [f"d{stump.id}"], NOT_AN_ANIMAL, "ada")
        now = datetime.now(UTC)
        session.add(Job(id="ignore-1", kind="ignore_regions", params={"device_id": "trap-jaguar"}, state="queued",
                        progress=0.0, created_at=now, updated_at=now))  # fmt: skip
    with MosquittoBroker(tmp_path / "broker", extra_config=config) as broker:
        settings = fleet.settings
        settings.mqtt_port, settings.mqtt_username = broker.port, "learning"
        settings.mqtt_password = SecretStr("pw-learning")
        run_ignore_regions_job(settings, fleet.sessions, "ignore-1")  # publishes, waits for the PUBACK
        # both traps connect afterwards: the command is retained for a trap that was offline
        own = Trap(broker.port, "trap-jaguar", ["trapline/trap-jaguar/cmd/ignore-regions"])
        other = Trap(broker.port, "trap-buow",
                     ["trapline/trap-jaguar/cmd/ignore-regions", "trapline/trap-buow/cmd/#"])  # fmt: skip
        deadline = time.monotonic() + 10
        while not own.received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # time for a wrongly delivered message to arrive at the other trap
        own.close()
        other.close()
    assert other.received == []
    assert [(t, r) for t, _, r in own.received] == [("trapline/trap-jaguar/cmd/ignore-regions", True)]
    payload = own.received[0][1]
    command = parse_payload("cmd/ignore-regions", payload)
    assert isinstance(command, IgnoreRegionsCommand)
    assert [r.bbox for r in command.regions] == [(stump.x, stump.y, stump.w, stump.h)]
    assert command.regions[0].source == stump.frame_id
    # the trap's handler takes it as it arrives and keeps it across a restart
    memory = IgnoreRegionMemory(tmp_path / "trap" / "ignore-regions.json")
    memory.handle(payload)
    assert IgnoreRegionMemory(tmp_path / "trap" / "ignore-regions.json").command == command
    with fleet.sessions() as session:
        job = session.get(Job, "ignore-1")
        assert job is not None and job.state == "done" and job.message == "1 region(s) sent to trap-jaguar"
