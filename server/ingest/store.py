"""Write a batch of accepted messages in one transaction; every message at most once.

Idempotency: a detection or sequence is stored once per id, an OTA progress report once per
(device, version, stage, time), a dead letter once per (topic, payload) digest, so a message the
broker delivers again (the worker died after the commit, before the acknowledgement) is a no-op.

Device state follows the order in which the server received the messages, never the trap's
clock: a trap without a real-time clock says 1970 until NTP answers, and a broken one may say
2099. Such timestamps are stored as sent and flagged (`clock_suspect`), never used to order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trapline.contracts import DetectionMessage, Heartbeat, OtaProgress, SequenceSummary, StatusMessage
from trapline.server.core.config import HeartbeatHistory
from trapline.server.ingest import bulk
from trapline.server.ingest.validate import Accepted
from trapline.server.models import (
    DeadLetter,
    Device,
    DeviceModelStatus,
    HeartbeatSample,
)

# A trap's clock is implausible before this (a Pi without an RTC starts at 1970) or this far ahead
# of the server's.
CLOCK_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_AHEAD = timedelta(days=1)
DEAD_PAYLOAD_KEPT = 65536


def printable(text: str) -> str:
    """`text` without control characters (PostgreSQL refuses NUL; logs and screens the rest)."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)


def clock_suspect(ts: datetime, received_at: datetime) -> bool:
    """True when a trap's timestamp cannot be right (clock not set yet, or far in the future)."""
    return ts < CLOCK_EARLIEST or ts > received_at + CLOCK_AHEAD


@dataclass(frozen=True)
class DeadLetterIn:
    topic: str
    reason: str
    payload: bytes
    received_at: datetime | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.topic.encode() + b"\0" + self.payload).hexdigest()


def _sample_heartbeat(
    session: Session, device_id: str, beat: Heartbeat, now: datetime, history: HeartbeatHistory
) -> None:
    last = session.scalar(
        select(func.max(HeartbeatSample.received_at)).where(HeartbeatSample.device_id == device_id)
    )
    if last is not None and now - last < history.sample_every:
        return
    session.execute(
        delete(HeartbeatSample).where(
            HeartbeatSample.device_id == device_id, HeartbeatSample.received_at < now - history.keep
        )
    )
    session.add(
        HeartbeatSample(
            device_id=device_id,
            received_at=now,
            spool_depth=beat.spool_depth,
            dropped=beat.dropped,
            frames_processed=beat.frames_processed,
            disk_free_bytes=beat.disk_free_bytes,
            cpu_temp_c=beat.cpu_temp_c,
            model_version=session.scalar(select(Device.model_version).where(Device.id == device_id)),
        )
    )
    session.flush()


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _insert_ignore(
    session: Session, table: Table, rows: list[dict[str, Any]], keys: list[str], returning: str | None
) -> set[Any]:
    """INSERT ... ON CONFLICT DO NOTHING; the `returning` values of the rows actually inserted."""
    if not rows:
        return set()
    statement = _insert(session)(table).on_conflict_do_nothing(index_elements=keys)
    if returning is None:
        session.execute(statement, rows)
        return set()
    # executemany + RETURNING: one cached statement ("insertmanyvalues"), not a fresh
    # 10,000-parameter VALUES list compiled for every batch
    return {row[0] for row in session.execute(statement.returning(table.c[returning]), rows)}


def _known_devices(session: Session, device_ids: set[str], now: datetime, auto_register: bool) -> set[str]:
    """The senders that may store (registered, or now registered); their last_seen_at is now."""
    if not device_ids:
        return set()
    if auto_register:
        rows = [{"id": d, "state": "unknown", "last_seen_at": now} for d in sorted(device_ids)]
        _insert_ignore(session, Device.__table__, rows, ["id"], None)  # type: ignore[arg-type]
        known = set(device_ids)
    else:
        known = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))))
    if known:
        session.execute(update(Device).where(Device.id.in_(known)).values(last_seen_at=now))
    return known


@dataclass
class _Plan:
    """A batch turned into rows, before the database is touched (so that write locks are held
    only while writing: SQLite has one writer at a time)."""

    frames: dict[str, list[tuple[Any, ...]]]  # device -> frame rows
    boxes: dict[str, list[tuple[Any, ...]]]  # frame id -> box rows
    sequences: dict[str, list[tuple[Any, ...]]]  # device -> sequence rows
    progress: dict[str, list[dict[str, Any]]]  # device -> OTA progress rows
    # only the newest status and heartbeat of each trap in the batch matter (arrival order)
    statuses: dict[str, tuple[Accepted, StatusMessage]]
    heartbeats: dict[str, tuple[Accepted, Heartbeat]]


def _plan(batch: Seq[Accepted]) -> _Plan:
    plan = _Plan({}, {}, {}, {}, {}, {})
    for item in batch:
        message, device = item.message, item.device_id
        if isinstance(message, DetectionMessage):
            plan.frames.setdefault(device, []).append(_frame_row(message, item.received_at))
            plan.boxes[message.id] = _box_rows(message)
        elif isinstance(message, SequenceSummary):
            plan.sequences.setdefault(device, []).append(_sequence_row(message))
        elif isinstance(message, StatusMessage):
            plan.statuses[device] = (item, message)
        elif isinstance(message, Heartbeat):
            plan.heartbeats[device] = (item, message)
        elif isinstance(message, OtaProgress):
            plan.progress.setdefault(device, []).append(
                {"device_id": device, "version": message.version, "stage": message.stage,
                 "reason": message.reason, "at": message.ts}
            )  # fmt: skip
    return plan


@dataclass(frozen=True)
class StoreResult:
    new_frames: int
    duplicate_frames: int  # redeliveries: the id was stored before
    dead_letters: int  # malformed, plus messages from devices nobody registered


def _frame_row(message: DetectionMessage, received_at: datetime) -> tuple[Any, ...]:
    """A detection_frames row in bulk.FRAME_COLUMNS order."""
    detections = message.detections
    cats = sorted({d.category for d in detections})
    image = message.image
    return (
        message.id, message.device_id, message.captured_at, message.processed_at, received_at,
        message.sequence_id, message.frame_index, image.file, image.sha256, image.width, image.height,
        image.night, message.model.name, message.model.version, message.inference_ms, len(detections),
        max((d.conf for d in detections), default=0.0), "," + ",".join(cats) + "," if cats else "",
        clock_suspect(message.captured_at, received_at),
    )  # fmt: skip


def _box_rows(message: DetectionMessage) -> list[tuple[Any, ...]]:
    """detections rows in bulk.BOX_COLUMNS order."""
    return [(message.id, d.category, d.conf, *d.bbox) for d in message.detections]


def _sequence_row(message: SequenceSummary) -> tuple[Any, ...]:
    return (
        message.sequence_id, message.device_id, message.first_frame_at, message.last_frame_at,
        message.frame_count, {k: v.model_dump() for k, v in message.categories.items()},
        dict(message.mean_class_probabilities),
    )  # fmt: skip


def _store_status(session: Session, item: Accepted, message: StatusMessage) -> None:
    values: dict[str, Any] = {
        "state": message.state,
        "state_at": message.ts,
        "state_received_at": item.received_at,
        "agent_version": message.agent_version,
        "clock_suspect": clock_suspect(message.ts, item.received_at),
    }
    if message.model is not None:
        values |= {"model_name": message.model.name, "model_version": message.model.version}
    session.execute(
        update(Device)
        .where(Device.id == item.device_id)
        # arrival order: a Last Will sent after a kill -9 wins over the "online" before it,
        # whatever either claims about the time
        .where(or_(Device.state_received_at.is_(None), Device.state_received_at <= item.received_at))
        .values(**values)
    )


def _store_heartbeat(session: Session, item: Accepted, message: Heartbeat, history: HeartbeatHistory) -> None:
    session.execute(
        update(Device)
        .where(Device.id == item.device_id)
        .where(or_(Device.last_heartbeat_at.is_(None), Device.last_heartbeat_at <= item.received_at))
        .values(
            last_heartbeat_at=item.received_at,
            heartbeat=message.model_dump(mode="json", by_alias=True),
            clock_suspect=clock_suspect(message.ts, item.received_at),
        )
    )
    _sample_heartbeat(session, item.device_id, message, item.received_at, history)


def store_batch(
    session: Session,
    batch: Seq[Accepted],
    dead: Seq[DeadLetterIn | tuple[str, str, bytes]],
    auto_register: bool = False,
    history: HeartbeatHistory = HeartbeatHistory(),  # noqa: B008 - frozen, never mutated
) -> StoreResult:
    """Store a batch of messages and dead letters in the caller's transaction."""
    plan = _plan(batch)  # all the Python work first: the writes below follow each other closely
    now = datetime.now(UTC)
    known = _known_devices(session, {a.device_id for a in batch}, now, auto_register)
    letters = [d if isinstance(d, DeadLetterIn) else DeadLetterIn(*d) for d in dead]
    letters += [
        DeadLetterIn(a.topic, f"unknown device {a.device_id!r}", a.payload, a.received_at)
        for a in batch
        if a.device_id not in known
    ]
    for device, (item, status) in plan.statuses.items():
        if device in known:
            _store_status(session, item, status)
    for device, (item, beat) in plan.heartbeats.items():
        if device in known:
            _store_heartbeat(session, item, beat, history)
    frames = [row for device, rows in plan.frames.items() if device in known for row in rows]
    inserted = bulk.insert_frames(session, frames)
    # boxes only of the frames stored now: a redelivered frame's boxes are there already
    bulk.insert_boxes(session, [box for frame_id in inserted for box in plan.boxes[frame_id]])
    bulk.insert_sequences(session, [r for d, rows in plan.sequences.items() if d in known for r in rows])
    progress = [r for d, rows in plan.progress.items() if d in known for r in rows]
    _insert_ignore(
        session,
        DeviceModelStatus.__table__,  # type: ignore[arg-type]
        progress,
        ["device_id", "version", "stage", "at"],
        None,
    )
    dead_rows = [
        {
            "topic": printable(letter.topic[:300]),
            "reason": printable(letter.reason[:1000]),
            "payload": letter.payload[:DEAD_PAYLOAD_KEPT],
            "payload_bytes": len(letter.payload),
            "received_at": letter.received_at or now,
            "digest": letter.digest,
        }
        for letter in letters
    ]
    _insert_ignore(session, DeadLetter.__table__, dead_rows, ["digest"], None)  # type: ignore[arg-type]
    return StoreResult(len(inserted), len(frames) - len(inserted), len(letters))
