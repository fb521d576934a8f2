"""Write a batch of accepted messages in one transaction; each detection id at most once."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trapline.contracts import DetectionMessage, Heartbeat, OtaProgress, SequenceSummary, StatusMessage
from trapline.server.core.config import HeartbeatHistory
from trapline.server.ingest.validate import Accepted
from trapline.server.models import (
    DeadLetter,
    Detection,
    DetectionFrame,
    Device,
    HeartbeatSample,
    Sequence,
)
from trapline.server.ota.progress import record_progress


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


def _insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]], key: str) -> set[str]:
    """INSERT ... ON CONFLICT DO NOTHING; returns the keys actually inserted."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # executemany + RETURNING: one cached statement ("insertmanyvalues"), not a fresh
    # 10,000-parameter VALUES list compiled for every batch
    statement = make(table).on_conflict_do_nothing(index_elements=[key]).returning(getattr(table.c, key))
    return {row[0] for row in session.execute(statement, rows)}


def _known_devices(session: Session, device_ids: set[str], now: datetime, auto_register: bool) -> set[str]:
    known = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))))
    if auto_register:
        for device_id in device_ids - known:
            session.add(Device(id=device_id, state="unknown", last_seen_at=now))
        session.flush()
        known = set(device_ids)
    if known:
        session.execute(update(Device).where(Device.id.in_(known)).values(last_seen_at=now))
    return known


@dataclass(frozen=True)
class StoreResult:
    new_frames: int
    duplicate_frames: int  # redeliveries: the id was stored before
    dead_letters: int  # malformed, plus messages from devices nobody registered


def store_batch(
    session: Session,
    batch: Seq[Accepted],
    dead: Seq[tuple[str, str, bytes]],
    auto_register: bool = False,
    history: HeartbeatHistory = HeartbeatHistory(),  # noqa: B008 - frozen, never mutated
) -> StoreResult:
    """Store a batch of messages and dead letters in the caller's transaction."""
    now = datetime.now(UTC)
    known = _known_devices(session, {a.device_id for a in batch}, now, auto_register)
    dead = list(dead)
    dead += [
        (a.topic, f"unknown device {a.device_id!r}", a.payload) for a in batch if a.device_id not in known
    ]
    batch = [a for a in batch if a.device_id in known]
    frames: list[dict[str, Any]] = []
    boxes: dict[str, list[dict[str, Any]]] = {}
    sequences: list[dict[str, Any]] = []
    for item in batch:
        message = item.message
        if isinstance(message, DetectionMessage):
            cats = sorted({d.category for d in message.detections})
            frames.append(
                {
                    "id": message.id,
                    "device_id": message.device_id,
                    "captured_at": message.captured_at,
                    "processed_at": message.processed_at,
                    "received_at": now,
                    "sequence_id": message.sequence_id,
                    "frame_index": message.frame_index,
                    "image_file": message.image.file,
                    "image_sha256": message.image.sha256,
                    "width": message.image.width,
                    "height": message.image.height,
                    "night": message.image.night,
                    "model_name": message.model.name,
                    "model_version": message.model.version,
                    "inference_ms": message.inference_ms,
                    "detection_count": len(message.detections),
                    "max_conf": max((d.conf for d in message.detections), default=0.0),
                    "categories": "," + ",".join(cats) + "," if cats else "",
                }
            )
            boxes[message.id] = [
                {
                    "frame_id": message.id,
                    "category": d.category,
                    "conf": d.conf,
                    "x": d.bbox[0],
                    "y": d.bbox[1],
                    "w": d.bbox[2],
                    "h": d.bbox[3],
                }
                for d in message.detections
            ]
        elif isinstance(message, SequenceSummary):
            sequences.append(
                {
                    "id": message.sequence_id,
                    "device_id": message.device_id,
                    "first_frame_at": message.first_frame_at,
                    "last_frame_at": message.last_frame_at,
                    "frame_count": message.frame_count,
                    "categories": {k: v.model_dump() for k, v in message.categories.items()},
                    "mean_class_probabilities": dict(message.mean_class_probabilities),
                }
            )
        elif isinstance(message, StatusMessage):
            # the Last Will carries no trap time: it happened when the broker sent it
            state_at = message.ts or now
            values: dict[str, Any] = {
                "state": message.state,
                "state_at": state_at,
                "agent_version": message.agent_version,
            }
            if message.model is not None:
                values |= {
                    "model_name": message.model.name,
                    "model_version": message.model.version,
                    "model_sha256": message.model.sha256,
                }
            session.execute(
                update(Device)
                .where(Device.id == item.device_id)
                .where(func.coalesce(Device.state_at, state_at) <= state_at)  # never go back in time
                .values(**values)
            )
        elif isinstance(message, Heartbeat):
            session.execute(
                update(Device)
                .where(Device.id == item.device_id)
                .values(
                    last_heartbeat_at=message.ts, heartbeat=message.model_dump(mode="json", by_alias=True)
                )
            )
            _sample_heartbeat(session, item.device_id, message, now, history)
        elif isinstance(message, OtaProgress):
            record_progress(session, item.device_id, message, now)
    inserted = _insert_ignore(session, DetectionFrame.__table__, frames, "id")
    new_boxes = [box for frame_id in inserted for box in boxes[frame_id]]
    if new_boxes:
        session.execute(insert(Detection), new_boxes)
    _insert_ignore(session, Sequence.__table__, sequences, "id")
    for topic, reason, payload in dead:
        session.add(
            DeadLetter(
                topic=topic[:300],
                reason=reason,
                payload=payload[:65536],
                payload_bytes=len(payload),
                received_at=now,
            )
        )
    return StoreResult(len(inserted), len(frames) - len(inserted), len(dead))
