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

from sqlalchemy import String, Table, bindparam, delete, func, insert, or_, select, update
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
from trapline.server.ota.progress import progress_row, record_progress

# A trap's clock is implausible before this (a Pi without an RTC starts at 1970) or this far ahead
# of the server's.
CLOCK_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_AHEAD = timedelta(days=1)
DEAD_PAYLOAD_KEPT = 65536
LAST_SEEN_STEP = timedelta(seconds=5)  # a trap's last_seen_at is exact to this


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


def _sample_heartbeats(
    session: Session, beats: list[tuple[str, Heartbeat, datetime]], history: HeartbeatHistory
) -> None:
    """Keep at most one heartbeat per trap per `history.sample_every`, none older than
    `history.keep` (for the fleet charts); a few statements for the whole batch."""
    if not beats:
        return
    devices = [device for device, _, _ in beats]
    last: dict[str, datetime] = dict(
        session.execute(
            select(HeartbeatSample.device_id, func.max(HeartbeatSample.received_at))
            .where(HeartbeatSample.device_id.in_(devices))
            .group_by(HeartbeatSample.device_id)
        ).all()
    )
    due = [(d, beat, at) for d, beat, at in beats if d not in last or at - last[d] >= history.sample_every]
    if not due:
        return
    session.execute(
        delete(HeartbeatSample).where(
            HeartbeatSample.device_id.in_([d for d, _, _ in due]),
            HeartbeatSample.received_at < min(at for _, _, at in due) - history.keep,
        )
    )
    models = dict(
        session.execute(select(Device.id, Device.model_version).where(Device.id.in_(devices))).all()
    )
    session.execute(
        insert(HeartbeatSample),
        [
            {"device_id": d, "received_at": at, "spool_depth": beat.spool_depth, "dropped": beat.dropped,
             "frames_processed": beat.frames_processed, "disk_free_bytes": beat.disk_free_bytes,
             "cpu_temp_c": beat.cpu_temp_c, "model_version": models.get(d)}
            for d, beat, at in due
        ],
    )  # fmt: skip


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
    """The senders that may store (registered, or now registered); their last_seen_at is now
    (to within LAST_SEEN_STEP)."""
    if not device_ids:
        return set()
    if auto_register:
        rows = [{"id": d, "state": "unknown", "last_seen_at": now} for d in sorted(device_ids)]
        _insert_ignore(session, Device.__table__, rows, ["id"], None)  # type: ignore[arg-type]
        known = set(device_ids)
    else:
        known = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))))
    if known:
        # at most one write per trap per LAST_SEEN_STEP: in a reconnect storm every batch holds
        # the same traps again, and rewriting their rows each time was a sixth of the store
        session.execute(
            update(Device)
            .where(Device.id.in_(known))
            .where(or_(Device.last_seen_at.is_(None), Device.last_seen_at < now - LAST_SEEN_STEP))
            .values(last_seen_at=now)
        )
    return known


@dataclass
class _Plan:
    """A batch turned into rows, before the database is touched (so that write locks are held
    only while writing: SQLite has one writer at a time)."""

    frames: dict[str, list[tuple[Any, ...]]]  # device -> frame rows
    boxes: dict[str, list[tuple[Any, ...]]]  # frame id -> box rows
    sequences: dict[str, list[tuple[Any, ...]]]  # device -> sequence rows
    progress: dict[str, list[OtaProgress]]  # device -> OTA progress reports
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
            plan.progress.setdefault(device, []).append(message)
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


_DEVICES = Device.__table__
_STATE_AT, _BEAT_AT = _DEVICES.c.state_received_at, _DEVICES.c.last_heartbeat_at
# one statement each, executed for all the batch's traps at once (executemany)
_STATUS_UPDATE = (
    _DEVICES.update()  # type: ignore[attr-defined]
    .where(_DEVICES.c.id == bindparam("b_id"))
    # arrival order: a Last Will sent after a kill -9 wins over the "online" before it, whatever
    # either claims about the time
    .where(
        or_(_DEVICES.c.state_received_at.is_(None), _DEVICES.c.state_received_at <= bindparam("b_received"))
    )
    .values(
        state=bindparam("b_state"),
        state_at=bindparam("b_ts"),
        state_received_at=bindparam("b_received"),
        agent_version=bindparam("b_agent"),
        clock_suspect=bindparam("b_suspect"),
        model_name=func.coalesce(bindparam("b_model_name", type_=String), _DEVICES.c.model_name),
        model_version=func.coalesce(bindparam("b_model_version", type_=String), _DEVICES.c.model_version),
        model_sha256=func.coalesce(bindparam("b_model_sha256", type_=String), _DEVICES.c.model_sha256),
    )
)
_HEARTBEAT_UPDATE = (
    _DEVICES.update()  # type: ignore[attr-defined]
    .where(_DEVICES.c.id == bindparam("b_id"))
    .where(
        or_(_DEVICES.c.last_heartbeat_at.is_(None), _DEVICES.c.last_heartbeat_at <= bindparam("b_received"))
    )
    .values(
        last_heartbeat_at=bindparam("b_received"),
        heartbeat=bindparam("b_beat"),
        clock_suspect=bindparam("b_suspect"),
    )
)


def _store_statuses(session: Session, statuses: list[tuple[Accepted, StatusMessage]]) -> None:
    if statuses:
        session.connection().execute(
            _STATUS_UPDATE,
            [
                # the Last Will carries no trap time: it happened when the broker sent it
                {"b_id": item.device_id, "b_received": item.received_at, "b_state": message.state,
                 "b_ts": message.ts or item.received_at, "b_agent": message.agent_version,
                 "b_suspect": message.ts is not None and clock_suspect(message.ts, item.received_at),
                 "b_model_name": message.model.name if message.model else None,
                 "b_model_version": message.model.version if message.model else None,
                 "b_model_sha256": message.model.sha256 if message.model else None}
                for item, message in statuses
            ],
        )  # fmt: skip


def _store_heartbeats(
    session: Session, beats: list[tuple[Accepted, Heartbeat]], history: HeartbeatHistory
) -> None:
    if not beats:
        return
    session.connection().execute(
        _HEARTBEAT_UPDATE,
        [
            {"b_id": item.device_id, "b_received": item.received_at,
             "b_beat": message.model_dump(mode="json", by_alias=True),
             "b_suspect": clock_suspect(message.ts, item.received_at)}
            for item, message in beats
        ],
    )  # fmt: skip
    _sample_heartbeats(
        session, [(item.device_id, message, item.received_at) for item, message in beats], history
    )


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
    _store_statuses(session, [entry for device, entry in plan.statuses.items() if device in known])
    _store_heartbeats(
        session, [entry for device, entry in plan.heartbeats.items() if device in known], history
    )
    frames = [row for device, rows in plan.frames.items() if device in known for row in rows]
    inserted = bulk.insert_frames(session, frames)
    # boxes only of the frames stored now: a redelivered frame's boxes are there already
    bulk.insert_boxes(session, [box for frame_id in inserted for box in plan.boxes[frame_id]])
    bulk.insert_sequences(session, [r for d, rows in plan.sequences.items() if d in known for r in rows])
    progress = [(d, report) for d, reports in plan.progress.items() if d in known for report in reports]
    _insert_ignore(
        session,
        DeviceModelStatus.__table__,  # type: ignore[arg-type]
        [row for device, report in progress if (row := progress_row(device, report, now)) is not None],
        ["device_id", "version", "stage", "at"],
        None,
    )
    for device, report in progress:
        record_progress(session, device, report, now)
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
