"""Hostile input through a real Mosquitto into real SQLite and PostgreSQL.

Every case is published between two valid messages of the same trap, fast enough that they share
a batch. Each time: the worker keeps running, the valid neighbours are stored exactly once, and
the bad message is a dead letter with a reason. (On the code before issue 8 each of these either
killed the worker's thread or made its batch fail for ever.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.server.conftest import (
    RunningWorker,
    detection_payload,
    mqtt_publisher,
    register,
    settings_for,
    wait_until,
)
from tests.support.postgres import TemporaryPostgres
from trapline.cli.broker import MosquittoBroker
from trapline.server.ingest.worker import IngestWorker
from trapline.server.models import DeadLetter, Detection, DetectionFrame, Device, DeviceModelStatus

WHEN = "2026-11-22T03:00:00.000+00:00"


def _detection(number: int, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(detection_payload("trap-01", number))
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return body


def _heartbeat(**changes: Any) -> dict[str, Any]:
    return {
        "schema": "trapline.heartbeat/1", "ts": WHEN, "uptime_s": 10.0, "frames_processed": 1,
        "frames_quarantined": 0, "spool_depth": 0, "spool_bytes": 0, "dropped": 0, **changes,
    }  # fmt: skip


def _sequence(**changes: Any) -> dict[str, Any]:
    return {
        "schema": "trapline.sequences/1", "sequence_id": "trap-01:seq:900", "device_id": "trap-01",
        "first_frame_at": WHEN, "last_frame_at": WHEN, "frame_count": 3,
        "categories": {"animal": {"max_count": 1, "best_conf": 0.9}},
        "mean_class_probabilities": {"animal": 0.9}, **changes,
    }  # fmt: skip


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()  # json.dumps writes NaN and Infinity as such


# name -> (topic kind, payload, a word the dead letter's reason must hold)
HOSTILE: dict[str, tuple[str, bytes, str]] = {
    # 5 KB that raised RecursionError past validation and killed the worker's thread
    "nested 2,500 deep": ("detections", b"[" * 2500 + b"]" * 2500, "not JSON"),
    "nested inside a valid field": (
        "detections",
        _raw(_detection(10)).replace(b'"detections": [', b'"detections": [' + b"[" * 3000 + b"]" * 3000 + b","),
        "not JSON",
    ),
    "int above 2^63 (frame_index)": ("detections", _raw(_detection(11, frame_index=2**64)), "frame_index"),
    "int above 2^63 (image.width)": ("detections", _raw(_detection(12, image__width=2**63 + 5)), "width"),
    "int of 2^31 (image.height)": ("detections", _raw(_detection(13, image__height=2**31)), "height"),
    "int of 2^31 (frame_count)": ("sequences", _raw(_sequence(frame_count=2**31)), "frame_count"),
    "year 0 once in UTC": ("detections", _raw(_detection(14, captured_at="0001-01-01T00:30:00+01:00")), "captured_at"),
    "year 10000 once in UTC": ("detections", _raw(_detection(15, processed_at="9999-12-31T23:30-01:00")), "processed_at"),
    "NUL in a string": ("detections", _raw(_detection(16, image__file="IMG\u0000.JPG")), "control characters"),
    "NUL in a sequence class": (
        "sequences", _raw(_sequence(mean_class_probabilities={"fox\u0000": 0.5})), "control characters"
    ),
    "NaN temperature": ("heartbeat", _raw(_heartbeat(cpu_temp_c=float("nan"))), "cpu_temp_c"),
    "infinite temperature": ("heartbeat", _raw(_heartbeat(cpu_temp_c=float("inf"))), "cpu_temp_c"),
    "1e999 uptime": ("heartbeat", _raw(_heartbeat()).replace(b'"uptime_s": 10.0', b'"uptime_s": 1e999'), "uptime_s"),
    "string for a number": ("detections", _raw(_detection(17, inference_ms="15")), "inference_ms"),
}  # fmt: skip


def _count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def ingest(database_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any) -> Iterator[Any]:
    sessions = sessions_for(database_url)
    register(sessions, "trap-01")
    worker = RunningWorker(IngestWorker(settings_for(database_url, tmp_path, broker), sessions))
    yield worker, sessions
    worker.stop()


def test_every_hostile_message_is_a_dead_letter_between_stored_neighbours(
    ingest: Any, broker: MosquittoBroker
) -> None:
    worker, sessions = ingest
    publisher = mqtt_publisher(broker)
    valid: list[str] = []
    for index, (kind, payload, _) in enumerate(HOSTILE.values()):
        before, after = 1000 + 2 * index, 1001 + 2 * index
        publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", before), qos=1)
        publisher.publish(f"trapline/trap-01/{kind}", payload, qos=1)
        publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", after), qos=1)
        valid += [f"trap-01:{before:09d}", f"trap-01:{after:09d}"]
    stored = lambda: _count(sessions, DetectionFrame)  # noqa: E731
    assert wait_until(lambda: stored() == len(valid) and _count(sessions, DeadLetter) == len(HOSTILE), 30), (
        stored(),
        _count(sessions, DeadLetter),
    )
    publisher.loop_stop()
    assert worker.thread.is_alive()
    assert worker.worker.healthy
    with sessions() as session:
        assert sorted(session.scalars(select(DetectionFrame.id))) == sorted(valid)  # each exactly once
        assert session.scalar(select(func.count()).select_from(Detection)) == len(valid)
        letters = list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
    by_payload = {bytes(letter.payload or b""): letter for letter in letters}
    for name, (kind, payload, word) in HOSTILE.items():
        letter = by_payload.get(payload[:65536])
        assert letter is not None, f"{name}: no dead letter"
        assert letter.topic == f"trapline/trap-01/{kind}", name
        assert word in letter.reason, f"{name}: {letter.reason}"
    assert worker.worker.counters.dead_letters == len(HOSTILE)
    assert worker.worker.counters.db_errors == 0  # refused at the door, never by the database


def _refuse_one_frame(sessions: sessionmaker[Session], frame_id: str) -> None:
    """A real database refusal of one message the contract accepts (a trigger), standing in for
    any value the database rejects that validation did not foresee."""
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text(
                "CREATE TRIGGER poison BEFORE INSERT ON detection_frames "
                f"WHEN NEW.id = '{frame_id}' BEGIN SELECT RAISE(ABORT, 'poison frame'); END"
            ))  # fmt: skip
        else:
            session.execute(text(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.id = '{frame_id}' THEN RAISE EXCEPTION 'poison frame'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            ))  # fmt: skip
            session.execute(text(
                "CREATE TRIGGER poison BEFORE INSERT ON detection_frames FOR EACH ROW EXECUTE FUNCTION poison()"
            ))  # fmt: skip


def test_a_message_the_database_refuses_does_not_hold_back_its_batch(
    ingest: Any, broker: MosquittoBroker
) -> None:
    worker, sessions = ingest
    _refuse_one_frame(sessions, "trap-01:000000050")
    publisher = mqtt_publisher(broker)
    for number in range(100):
        publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", number), qos=1)
    assert wait_until(
        lambda: _count(sessions, DetectionFrame) == 99 and _count(sessions, DeadLetter) == 1, 30
    )
    publisher.loop_stop()
    with sessions() as session:
        ids = set(session.scalars(select(DetectionFrame.id)))
        letter = session.scalars(select(DeadLetter)).one()
    assert ids == {f"trap-01:{n:09d}" for n in range(100)} - {"trap-01:000000050"}
    assert "the database refused it" in letter.reason
    assert "poison frame" in letter.reason
    assert letter.payload == detection_payload("trap-01", 50)  # kept whole: it can be replayed
    assert worker.worker.counters.isolated_batches >= 1
    assert worker.thread.is_alive()


def test_redelivered_progress_and_dead_letters_are_stored_once(ingest: Any, broker: MosquittoBroker) -> None:
    _, sessions = ingest
    publisher = mqtt_publisher(broker)
    progress = json.dumps({"ts": WHEN, "version": "3", "stage": "installed"}).encode()
    for _ in range(3):  # a redelivery is the same bytes again
        publisher.publish("trapline/trap-01/ota", progress, qos=1)
        publisher.publish("trapline/trap-01/detections", b"{broken", qos=1)
    publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", 1), qos=1)
    assert wait_until(lambda: _count(sessions, DetectionFrame) == 1, 20)
    publisher.loop_stop()
    assert _count(sessions, DeviceModelStatus) == 1
    assert _count(sessions, DeadLetter) == 1


def test_a_database_outage_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, postgres: TemporaryPostgres, sessions_for: Any
) -> None:
    """PostgreSQL stops mid-stream: nothing is acknowledged, nothing becomes a dead letter; when it
    is back every message is stored once."""
    from trapline.server.migrate import upgrade

    url = postgres.create_database("outage")
    upgrade(url)
    sessions = sessions_for(url)
    register(sessions, "trap-01")
    settings = settings_for(url, tmp_path, broker, ingest_batch_size=50, ingest_receive_maximum=100)
    worker = RunningWorker(IngestWorker(settings, sessions))
    publisher = mqtt_publisher(broker)
    try:
        for number in range(50):
            publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", number), qos=1)
        assert wait_until(lambda: _count(sessions, DetectionFrame) == 50, 20)
        postgres.pause()
        for number in range(50, 1050):
            publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", number), qos=1)
        assert wait_until(lambda: worker.worker.counters.db_errors >= 2, 20)
        # flow control: the broker holds the flood, the worker never more than its Receive Maximum
        assert 0 < worker.worker.held <= 100
        postgres.resume()
        assert wait_until(lambda: _count(sessions, DetectionFrame) == 1050, 60)
        assert _count(sessions, DeadLetter) == 0
        assert _count(sessions, Detection) == 1050
        assert worker.thread.is_alive()
    finally:
        publisher.loop_stop()
        worker.stop()


def test_device_state_follows_arrival_not_the_traps_clock(ingest: Any, broker: MosquittoBroker) -> None:
    _, sessions = ingest
    publisher = mqtt_publisher(broker)

    def status(state: str, ts: str, model: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"state": state, "ts": ts, "agent_version": "0.1.0"}
        if model:
            body["model"] = model
        publisher.publish("trapline/trap-01/status", json.dumps(body).encode(), qos=1).wait_for_publish(5)

    def device() -> Device:
        with sessions() as session:
            row: Device | None = session.get(Device, "trap-01")
            assert row is not None
            return row

    status(
        "online", "2099-01-01T00:00:00+00:00", {"name": "trapline-nano", "version": "7", "sha256": "c" * 64}
    )
    assert wait_until(lambda: device().state == "online", 10)  # a broken clock: shown, flagged
    assert device().clock_suspect
    assert device().model_version == "7"
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    status("offline", an_hour_ago)  # later, but "older": it still wins
    assert wait_until(lambda: device().state == "offline", 10)
    assert not device().clock_suspect
    assert device().model_version == "7"  # a status without a model keeps the one known
    status("online", "1970-01-01T00:00:07+00:00")  # a Pi before NTP
    assert wait_until(lambda: device().state == "online", 10)
    row = device()
    assert row.clock_suspect
    assert row.state_at is not None and row.state_at.year == 1970  # shown as sent
    publisher.publish("trapline/trap-01/heartbeat", _raw(_heartbeat(ts="1970-01-01T00:01:00+00:00")), qos=1)
    publisher.publish(
        "trapline/trap-01/detections",
        _raw(
            _detection(1, captured_at="1970-01-01T00:01:00+00:00", processed_at="1970-01-01T00:01:00+00:00")
        ),
        qos=1,
    )
    assert wait_until(lambda: _count(sessions, DetectionFrame) == 1, 10)
    publisher.loop_stop()
    with sessions() as session:
        frame = session.scalars(select(DetectionFrame)).one()
        assert frame.clock_suspect
        beat = session.get(Device, "trap-01")
        assert beat is not None and beat.last_heartbeat_at is not None
        assert beat.last_heartbeat_at.year >= 2026  # when the server heard it, not 1970


def test_a_backlog_after_a_restart_never_floods_the_workers_memory(
    sqlite_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any
) -> None:
    """The broker holds a backlog for the worker's session; the new worker takes it in without
    ever queueing more than twice its Receive Maximum (Mosquitto 2.0.11 sends more than allowed
    after a session resumes), and stores every message once."""
    sessions = sessions_for(sqlite_url)
    register(sessions, "trap-01")
    settings = settings_for(sqlite_url, tmp_path, broker, ingest_batch_size=50, ingest_receive_maximum=100)
    RunningWorker(IngestWorker(settings, sessions)).stop()  # the session exists; the worker is gone
    publisher = mqtt_publisher(broker)
    infos = [
        publisher.publish("trapline/trap-01/detections", detection_payload("trap-01", n), qos=1)
        for n in range(3000)
    ]
    for info in infos:
        info.wait_for_publish(30)
    worker = RunningWorker(IngestWorker(settings, sessions))
    peak = 0
    try:
        while _count(sessions, DetectionFrame) < 3000 and worker.thread.is_alive():
            peak = max(peak, worker.worker.queued)
            time.sleep(0.005)
    finally:
        worker.stop()
        publisher.loop_stop()
    assert peak <= 200
    assert _count(sessions, DetectionFrame) == 3000
    assert _count(sessions, Detection) == 3000
