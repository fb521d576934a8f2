"""A box marked "not an animal" reaches its own trap, and only its own, through a real Mosquitto
with the generated ACL: the server publishes the camera's memory retained on cmd/ignore-regions, the
real agent's command link hands it to its memory, and the next picture of that stump is quiet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import CAMTRAP
from tests.server.clustering.conftest import Fleet
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import IgnoreRegionsCommand, parse_payload
from trapline.edge.agent import Agent, resolve_model
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL, AgentConfig
from trapline.edge.detector import Detector
from trapline.edge.ignore_regions import IgnoreRegionMemory, iou
from trapline.server.db import transaction
from trapline.server.learning.labels import NOT_AN_ANIMAL, label_crops
from trapline.server.learning.negatives import run_ignore_regions_job
from trapline.server.models import Detection, DetectionFrame, Job
from trapline.server.security import write_mosquitto_auth

DEVICES = {"trap-jaguar": "pw-jaguar", "trap-buow": "pw-buow"}


class Trap:
    """An MQTT session with a trap's (or the server's) credentials, subscribed to `topics` once
    the constructor returns."""

    def __init__(self, port: int, user: str, topics: list[str]) -> None:
        self.received: list[tuple[str, bytes, bool]] = []
        self.granted: list[Any] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, {**DEVICES, "learning": "pw-learning"}[user])
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


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd, acl = write_mosquitto_auth(
        tmp_path / "auth", "trapline", devices=DEVICES, server_users={"learning": "pw-learning"}
    )
    config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=config) as broker:
        yield broker


def publish_not_an_animal(fleet: Fleet, broker: MosquittoBroker, box: Detection) -> None:
    """A reviewer's "not an animal", then the job it queues, publishing through the broker."""
    with transaction(fleet.sessions) as session:
        label_crops(session, [f"d{box.id}"], NOT_AN_ANIMAL, "ada")
        now = datetime.now(UTC)
        session.add(Job(id="ignore-1", kind="ignore_regions", params={"device_id": "trap-jaguar"}, state="queued",
                        progress=0.0, created_at=now, updated_at=now))  # fmt: skip
    settings = fleet.settings
    settings.mqtt_port, settings.mqtt_username = broker.port, "learning"
    settings.mqtt_password = SecretStr("pw-learning")
    run_ignore_regions_job(settings, fleet.sessions, "ignore-1")  # publishes, waits for the PUBACK


def test_the_ignore_list_reaches_its_trap_only(
    fleet: Fleet, acl_broker: MosquittoBroker, tmp_path: Path
) -> None:
    broker = acl_broker
    with fleet.sessions() as session:
        stump = session.scalars(
            select(Detection).join(DetectionFrame).where(DetectionFrame.device_id == "trap-jaguar").limit(1)
        ).one()
    publish_not_an_animal(fleet, broker, stump)
    # both traps connect afterwards: the command is retained for a trap that was offline
    own = Trap(broker.port, "trap-jaguar", ["trapline/trap-jaguar/cmd/ignore-regions"])
    other = Trap(
        broker.port, "trap-buow", ["trapline/trap-jaguar/cmd/ignore-regions", "trapline/trap-buow/cmd/#"]
    )
    deadline = time.monotonic() + 10
    while not own.received and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time for a wrongly delivered message to arrive at the other trap
    own.close()
    other.close()
    assert other.received == []
    assert [(t, r) for t, _, r in own.received] == [("trapline/trap-jaguar/cmd/ignore-regions", True)]
    command = parse_payload("cmd/ignore-regions", own.received[0][1])
    assert isinstance(command, IgnoreRegionsCommand)
    assert [r.bbox for r in command.regions] == [(stump.x, stump.y, stump.w, stump.h)]
    assert command.regions[0].source == stump.frame_id
    with fleet.sessions() as session:
        job = session.get(Job, "ignore-1")
        assert job is not None and job.state == "done" and job.message == "1 region(s) sent to trap-jaguar"


def test_the_trap_demotes_the_box_once_the_command_arrives(
    fleet: Fleet, acl_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = acl_broker
    detector = Detector(resolve_model(PACKAGED_MODEL, PACKAGED_KEYRING))
    with fleet.sessions() as session:
        rows = session.execute(
            select(Detection, DetectionFrame)
            .join(DetectionFrame)
            .where(DetectionFrame.device_id == "trap-jaguar")
        ).all()
    # a picture whose box the trap's own model finds too (the server's boxes are MegaDetector's)
    for box, frame in rows:
        photo = CAMTRAP / "images" / frame.image_file
        image = cv2.imread(str(photo))
        assert image is not None
        mine = [d.bbox for d in detector.detect(image).detections if d.category == "animal"]
        if any(iou(b, (box.x, box.y, box.w, box.h)) >= 0.8 for b in mine):
            break
    else:
        pytest.fail("no jaguar box that the packaged model finds too")
    publish_not_an_animal(fleet, broker, box)

    monkeypatch.setenv("TRAPLINE_MQTT_PASSWORD", DEVICES["trap-jaguar"])
    config = AgentConfig.model_validate({
        "device_id": "trap-jaguar",
        "source": {"type": "replay", "files": [str(photo)], "count": 2, "interval_s": 2.0},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "trap-jaguar"},
        "spool": {"path": str(tmp_path / "trap" / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "trap" / "quarantine"),
    })  # fmt: skip
    collector = Trap(broker.port, "learning", ["trapline/trap-jaguar/detections"])
    try:
        agent = Agent(config)
        assert agent.ignore_regions.command is None  # a trap that never heard of the stump
        assert agent.run(drain_timeout_s=20) == 0
        deadline = time.monotonic() + 10
        while len(collector.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        collector.close()
    messages = [json.loads(payload) for _, payload, _ in collector.received]
    assert len(messages) == 2
    # the command came through the agent's own command link, the memory kept it on disk
    remembered = IgnoreRegionMemory(tmp_path / "trap" / "ignore-regions.json").command
    assert remembered is not None and [r.bbox for r in remembered.regions] == [(box.x, box.y, box.w, box.h)]
    # the retained command arrives within a second of connecting: the second picture is quiet
    last = messages[-1]
    assert not any(iou(tuple(d["bbox"]), (box.x, box.y, box.w, box.h)) >= 0.5 for d in last["detections"])
    assert agent.ignore_regions.demoted >= 1
