"""Detections with filters and cursor pagination, sequences, and counts per day."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from trapline.server.api.deps import SessionDep, UserDep
from trapline.server.api.schemas import Box, DailyCount, Frame, Page, SequenceOut
from trapline.server.models import Detection, DetectionFrame, Sequence
from trapline.server.queries import boxes_by_frame, frame_query, media_by_frame

router = APIRouter(tags=["detections"])


def _encode(captured_at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([captured_at.isoformat(), key]).encode()).decode()


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = datetime.fromisoformat(stamp)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, "invalid cursor") from exc
    if when.tzinfo is None:  # cursors we hand out always carry an offset
        raise HTTPException(400, "invalid cursor: its time has no timezone")
    return when, str(key)


def keyset_page(
    session: Session, query: Select[Any], stamp_column: Any, key_column: Any, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Newest first by (stamp, key); the cursor is the last row's pair, so pages never shift."""
    if cursor:
        stamp, key = _decode(cursor)
        query = query.where(or_(stamp_column < stamp, and_(stamp_column == stamp, key_column < key)))
    ordered = query.order_by(stamp_column.desc(), key_column.desc()).limit(limit + 1)
    rows = list(session.scalars(ordered))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, _encode(getattr(last, stamp_column.key), getattr(last, key_column.key))


def frames_page(session: Session, query: Select[Any], cursor: str | None, limit: int) -> Page[Frame]:
    rows, next_cursor = keyset_page(
        session, query, DetectionFrame.captured_at, DetectionFrame.id, cursor, limit
    )
    ids = [r.id for r in rows]
    boxes = {
        frame_id: [Box(category=d.category, conf=d.conf, bbox=(d.x, d.y, d.w, d.h)) for d in dets]
        for frame_id, dets in boxes_by_frame(session, ids).items()
    }
    media = media_by_frame(session, ids)
    items = [
        Frame(
            id=r.id,
            device_id=r.device_id,
            captured_at=r.captured_at,
            sequence_id=r.sequence_id,
            frame_index=r.frame_index,
            image_file=r.image_file,
            image_sha256=r.image_sha256,
            width=r.width,
            height=r.height,
            night=r.night,
            model=f"{r.model_name} v{r.model_version}",
            detections=boxes[r.id],
            media={kind: item.sha256 for kind, item in media[r.id].items()},
            clock_suspect=r.clock_suspect,
        )
        for r in rows
    ]
    return Page[Frame](items=items, next_cursor=next_cursor)


@router.get("/detections", response_model=Page[Frame])
def list_detections(
    session: SessionDep,
    _user: UserDep,
    device_id: str | None = None,
    category: Annotated[str | None, Query(description="animal, person, vehicle or a species")] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    min_conf: Annotated[float | None, Query(ge=0, le=1)] = None,
    night: Annotated[bool | None, Query(description="true: night (IR) frames only; false: day")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[Frame]:
    """Frames, newest first, with their boxes. Pass `next_cursor` back as `cursor` for more."""
    query = frame_query(device_id, category, since, until, min_conf, night)
    return frames_page(session, query, cursor, limit)


@router.get("/sequences", response_model=Page[SequenceOut])
def list_sequences(
    session: SessionDep,
    _user: UserDep,
    device_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[SequenceOut]:
    query = select(Sequence)
    if device_id:
        query = query.where(Sequence.device_id == device_id)
    rows, next_cursor = keyset_page(session, query, Sequence.first_frame_at, Sequence.id, cursor, limit)
    items = [SequenceOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[SequenceOut](items=items, next_cursor=next_cursor)


def daily_counts(
    session: Session, device_id: str | None, since: datetime | None, until: datetime | None
) -> list[DailyCount]:
    day = func.date(DetectionFrame.captured_at)
    query: Any = (
        select(
            day,
            DetectionFrame.device_id,
            Detection.category,
            func.count(Detection.id),
            func.count(func.distinct(DetectionFrame.id)),
        )
        .join(Detection, Detection.frame_id == DetectionFrame.id)
        .group_by(day, DetectionFrame.device_id, Detection.category)
        .order_by(day, DetectionFrame.device_id, Detection.category)
    )
    if device_id:
        query = query.where(DetectionFrame.device_id == device_id)
    if since:
        query = query.where(DetectionFrame.captured_at >= since)
    if until:
        query = query.where(DetectionFrame.captured_at < until)
    return [
        DailyCount(day=str(d), device_id=dev, category=cat, detections=n, frames=f)
        for d, dev, cat, n, f in session.execute(query)
    ]


@router.get("/counts/daily", response_model=list[DailyCount])
def counts_per_day(
    session: SessionDep,
    _user: UserDep,
    device_id: str | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> list[DailyCount]:
    """Detections (boxes) and frames per category, per day (UTC), per trap."""
    return daily_counts(session, device_id, since, until)
