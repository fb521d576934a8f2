"""The ingest worker against a real Mosquitto and real databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import SAMPLES, agent_config, start_agent
from tests.server.conftest import (
    RunningWorker,
    detection_payload,
    mqtt_publisher,
    register,
    settings_for,
    wait_until,
)
from trapline.cli.broker import MosquittoBroker
from trapline.edge.spool import DetectionSpool
from trapline.server.ingest.worker import IngestWorker
from trapline.server.models import DeadLetter, Detection, DetectionFrame, Device, Sequence

_publisher = mqtt_publisher
_wait = wait_until


def test_hostile_messages_become_dead_letters_and_the_worker_goes_on(
    database_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any
) -> None:
    sessions = sessions_for(database_url)
    register(sessions, "trap-01", "trap-02")
    worker = RunningWorker(IngestWorker(settings_for(database_url, tmp_path, broker), sessions))
    publisher = _publisher(broker)
    spoofed = json.loads(detection_payload("trap-02", 1))
    hostile = {
        "trapline/trap-01/detections": [
            b"{not json",
            json.dumps({"schema": "trapline.detections/1", "id": "x"}).encode(),  # missing fields
            b'{"a": "' + b"x" * 300_000 + b'"}',  # huge
            json.dumps(spoofed).encode(),  # trap-01 speaking for trap-02
            b"\xff\xfe\x00binary",
        ],
        "trapline/trap-99/detections": [detection_payload("trap-99", 1)],  # nobody registered it
        "trapline/trap-01/heartbeat": [b'{"schema": "trapline.heartbeat/1"}'],
    }
    for topic, payloads in hostile.items():
        for payload in payloads:
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)
    publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", 7), qos=1).wait_for_publish(
        5
    )
    with sessions() as session:
        assert _wait(lambda: session.scalar(select(func.count()).select_from(DeadLetter)) == 7, 20)
        assert _wait(lambda: session.scalar(select(func.count()).select_from(DetectionFrame)) == 1, 10)
        reasons = " | ".join(session.scalars(select(DeadLetter.reason)))
        unknown = session.scalars(
            select(DeadLetter).where(DeadLetter.reason.contains("unknown device"))
        ).one()
        assert unknown.topic == "trapline/trap-99/detections"  # kept whole, to be looked at later
        assert unknown.payload == detection_payload("trap-99", 1)
    publisher.loop_stop()
    assert worker.thread.is_alive()
    worker.stop()
    for expected in (
        "not JSON",
        "off-contract detections",
        "exceeds",
        "spoofing",
        "unknown device",
        "off-contract heartbeat",
    ):
        assert expected in reasons
    assert worker.worker.counters.dead_letters == 7


def test_two_workers_share_the_load_without_duplicates(
    sqlite_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any
) -> None:
    sessions = sessions_for(sqlite_url)
    register(sessions, "trap-01", "trap-02")
    workers = [
        RunningWorker(
            IngestWorker(
                settings_for(
                    sqlite_url, tmp_path, broker, mqtt_client_id=f"ingest-{i}", mqtt_share_group="ingest"
                ),
                sessions,
            )
        )
        for i in (1, 2)
    ]
    publisher = _publisher(broker)
    for number in range(300):
        for device in ("trap-01", "trap-02"):
            publisher.publish(f"trapline/{device}/detections", detection_payload(device, number), qos=1)
    # and a redelivery: the same ids again
    for number in range(50):
        publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", number), qos=1)
    with sessions() as session:
        assert _wait(lambda: session.scalar(select(func.count()).select_from(DetectionFrame)) == 600, 60)
        time.sleep(1)
        assert session.scalar(select(func.count()).select_from(DetectionFrame)) == 600
        assert (
            session.scalar(select(func.count()).select_from(Detection)) == 600
        )  # one box each, none doubled
    publisher.loop_stop()
    shares = [w.worker.counters.received for w in workers]
    for w in workers:
        w.stop()
    assert all(share > 0 for share in shares), shares  # both did work
    assert sum(shares) == 650


@pytest.mark.slow
def test_server_killed_mid_stream_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, sqlite_url: str, sessions_for: Any
) -> None:
    sessions = sessions_for(sqlite_url)
    register(sessions, "trap-01", "trap-02")
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": sqlite_url,
        "TRAPLINE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_PORT": str(broker.port),
    }

    def ingest(log_name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / log_name).open("ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "trapline.cli", "server", "ingest"],
                env=env,
                stdout=log_file,
                stderr=log_file,
            )

    server = ingest("ingest1.log")
    # the worker's persistent session must exist before traps publish (as on a running server)
    assert _wait(lambda: "subscribed" in (tmp_path / "ingest1.log").read_text(), 30)
    frames = 60
    agents = []
    for device in ("trap-01", "trap-02"):
        work = tmp_path / device
        source = {"type": "replay", "files": [str(SAMPLES)], "count": frames, "interval_s": 0.1}
        config = agent_config(work, broker.port, source, device_id=device)
        work.mkdir()
        (work / "agent.yaml").write_text(json.dumps(config))
        agents.append(start_agent(work / "agent.yaml", work / "agent.log"))

    def stored() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count()).select_from(DetectionFrame)) or 0)

    assert _wait(lambda: stored() >= 20, 120), (tmp_path / "ingest1.log").read_text()
    server.send_signal(signal.SIGKILL)  # no goodbye: unacknowledged messages stay with the broker
    server.wait()
    during_outage = stored()
    time.sleep(3)
    server = ingest("ingest2.log")
    for agent in agents:
        assert agent.wait(300) == 0

    def expected_ids() -> set[str]:
        """Each trap's ids: "<device>:<installation id of its spool>:<counter>"."""
        ids = set()
        for device in ("trap-01", "trap-02"):
            spool = DetectionSpool(tmp_path / device / "state" / "spool.sqlite", max_bytes=1 << 30)
            ids |= {f"{device}:{spool.installation_id}:{n:09d}" for n in range(1, frames + 1)}
            spool.close()
        return ids

    def diagnosis() -> str:
        with sessions() as session:
            have = set(session.scalars(select(DetectionFrame.id)))
            dead = [r for r in session.scalars(select(DeadLetter.reason))][:5]
        want = expected_ids()
        return f"stored {len(have)}, missing {sorted(want - have)[:10]}, dead letters {dead}"

    def states() -> dict[str, str]:
        with sessions() as session:
            return dict(session.execute(select(Device.id, Device.state)).tuples().all())

    try:
        assert _wait(lambda: stored() == 2 * frames, 60), diagnosis()
        # the last word of each trap is its clean "stopped" (never overwritten by an older status)
        assert _wait(lambda: states() == {"trap-01": "stopped", "trap-02": "stopped"}, 20), states()
    finally:
        server.terminate()
        server.wait(20)
    assert during_outage < 2 * frames  # the kill really happened mid-stream
    with sessions() as session:
        ids = set(session.scalars(select(DetectionFrame.id)))
        assert ids == expected_ids()
        mismatched = session.execute(
            select(DetectionFrame.id)
            .outerjoin(Detection, Detection.frame_id == DetectionFrame.id)
            .group_by(DetectionFrame.id, DetectionFrame.detection_count)
            .having(func.count(Detection.id) != DetectionFrame.detection_count)
        ).all()
        assert mismatched == []  # no box stored twice, none lost
        assert session.scalar(select(func.count()).select_from(Sequence)) > 0


def test_last_seen_is_written_at_most_once_per_step(database_url: str, sessions_for: Any) -> None:
    """A storm brings the same traps in every batch: their row is rewritten once per
    LAST_SEEN_STEP, not once per batch, and never goes back."""
    from datetime import UTC, datetime, timedelta

    from trapline.server.db import transaction
    from trapline.server.ingest.store import LAST_SEEN_STEP, _known_devices

    sessions = sessions_for(database_url)
    register(sessions, "trap-01")
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    half = timedelta(seconds=0.5)
    times = [start, start + 2 * half, start + LAST_SEEN_STEP - half, start + LAST_SEEN_STEP + half]
    seen = []
    for now in times:
        with transaction(sessions) as session:
            assert _known_devices(session, {"trap-01", "trap-99"}, now, auto_register=False) == {"trap-01"}
        with sessions() as session:
            device = session.get(Device, "trap-01")
            assert device is not None
            seen.append(device.last_seen_at)
    assert seen == [start, start, start, times[3]]


def test_two_workers_split_the_topics(
    database_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any
) -> None:
    """`ingest_topics`: one worker takes the detections, the other the rest, each on its own
    persistent session (no $share); every message is stored once, by the worker that owns it."""
    sessions = sessions_for(database_url)
    register(sessions, "trap-01")
    workers = [
        RunningWorker(
            IngestWorker(
                settings_for(database_url, tmp_path, broker, ingest_topics=topics, mqtt_client_id=name),
                sessions,
            )
        )
        for name, topics in (
            ("ingest-d", ("detections",)),
            ("ingest-r", ("status", "sequences", "heartbeat", "ota")),
        )
    ]
    publisher = _publisher(broker)
    try:
        for number in range(20):
            publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", number), qos=1)
        for number in range(5):
            summary = {
                "schema": "trapline.sequences/1", "sequence_id": f"trap-01:seq:{number}", "device_id": "trap-01",
                "first_frame_at": "2026-11-30T03:00:00.000+00:00", "last_frame_at": "2026-11-30T03:00:02.000+00:00",
                "frame_count": 3, "categories": {"animal": {"max_count": 1, "best_conf": 0.9}},
                "mean_class_probabilities": {"animal": 0.9},
            }  # fmt: skip
            publisher.publish("trapline/trap-01/sequences", json.dumps(summary).encode(), qos=1)

        def stored() -> tuple[int, int]:
            with sessions() as session:
                return (
                    session.scalar(select(func.count()).select_from(DetectionFrame)) or 0,
                    session.scalar(select(func.count()).select_from(Sequence)) or 0,
                )

        assert _wait(lambda: stored() == (20, 5), 20), stored()
        assert [w.worker.counters.received for w in workers] == [20, 5]
        assert [w.worker.counters.dead_letters for w in workers] == [0, 0]
    finally:
        publisher.loop_stop()
        for worker in workers:
            worker.stop()


def test_ingest_topics_must_be_written_by_traps() -> None:
    from pydantic import ValidationError

    from trapline.server.core.config import ServerSettings

    assert ServerSettings(ingest_topics="detections, ota").ingest_topics == ("detections", "ota")
    for wrong in ("cmd/model", "", "detections,bogus"):
        with pytest.raises(ValidationError):
            ServerSettings(ingest_topics=wrong)


def test_a_bug_while_validating_keeps_the_batch_as_dead_letters(
    sqlite_url: str,
    tmp_path: Path,
    broker: MosquittoBroker,
    sessions_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net under validation: a batch it fails on is kept (dead letters with the reason,
    acknowledged), the worker goes on with the next one."""
    sessions = sessions_for(sqlite_url)
    register(sessions, "trap-01")
    original = IngestWorker._validate
    calls = []

    def failing_once(self: IngestWorker, batch: list[Any]) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return original(self, batch)

    monkeypatch.setattr(IngestWorker, "_validate", failing_once)
    worker = RunningWorker(IngestWorker(settings_for(sqlite_url, tmp_path, broker), sessions))
    publisher = _publisher(broker)
    try:
        publisher.publish(
            "trapline/trap-01/detections", detection_payload("trap-01", 1), qos=1
        ).wait_for_publish(5)
        assert _wait(lambda: worker.worker.counters.dead_letters == 1, 20)
        publisher.publish(
            "trapline/trap-01/detections", detection_payload("trap-01", 2), qos=1
        ).wait_for_publish(5)
        assert _wait(lambda: worker.worker.counters.stored_frames == 1, 20)
        with sessions() as session:
            letters = session.scalars(select(DeadLetter)).all()
            assert [letter.reason for letter in letters] == [
                "ingest failed on this batch: RuntimeError: a bug"
            ]
        assert worker.worker.counters.unexpected_errors == 1
        assert worker.thread.is_alive()
    finally:
        publisher.loop_stop()
        worker.stop()
