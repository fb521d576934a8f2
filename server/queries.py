"""Read queries several parts share (API, jobs, exports)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from trapline.contracts import CATEGORIES
from trapline.server.models import Detection, DetectionFrame, Label, Media

# Exports span a year of frames: IN lists are cut below every database's bound-parameter limit
# (SQLite 32,766; PostgreSQL 65,535).
_CHUNK = 5000


def rows_where_in(session: Session, query: Select[Any], column: Any, ids: Sequence[str]) -> Iterator[Any]:
    """`query` rows whose `column` is in `ids`, asked in chunks."""
    for start in range(0, len(ids), _CHUNK):
        yield from session.scalars(query.where(column.in_(ids[start : start + _CHUNK])))


def frames_in(since: datetime | None, until: datetime | None) -> Select[Any]:
    """Frames captured in [since, until), oldest first per trap."""
    query = select(DetectionFrame).order_by(DetectionFrame.device_id, DetectionFrame.captured_at)
    if since:
        query = query.where(DetectionFrame.captured_at >= since)
    if until:
        query = query.where(DetectionFrame.captured_at < until)
    return query


def frame_query(
    device_id: str | None,
    category: str | None,
    since: datetime | None,
    until: datetime | None,
    min_conf: float | None,
    night: bool | None = None,
) -> Select[Any]:
    """Frames by trap, category (or a species a biologist labelled), time, confidence, day/night."""
    query = select(DetectionFrame)
    if device_id:
        query = query.where(DetectionFrame.device_id == device_id)
    if category in CATEGORIES:
        query = query.where(DetectionFrame.categories.contains(f",{category},"))
    elif category:  # a species: frames a biologist labelled so, alone or as a whole sequence
        labelled = select(Label.frame_id).where(Label.species == category, Label.frame_id.is_not(None))
        sequences = select(Label.sequence_id).where(Label.species == category, Label.sequence_id.is_not(None))
        query = query.where(or_(DetectionFrame.id.in_(labelled), DetectionFrame.sequence_id.in_(sequences)))
    if since:
        query = query.where(DetectionFrame.captured_at >= since)
    if until:
        query = query.where(DetectionFrame.captured_at < until)
    if min_conf is not None:
        query = query.where(DetectionFrame.max_conf >= min_conf)
    if night is not None:
        query = query.where(DetectionFrame.night.is_(night))
    return query


def boxes_by_frame(session: Session, frame_ids: Sequence[str]) -> dict[str, list[Detection]]:
    boxes: dict[str, list[Detection]] = {frame_id: [] for frame_id in frame_ids}
    for det in rows_where_in(
        session, select(Detection).order_by(Detection.id), Detection.frame_id, frame_ids
    ):
        boxes[det.frame_id].append(det)
    return boxes


def media_by_frame(session: Session, frame_ids: Sequence[str]) -> dict[str, dict[str, Media]]:
    """frame id -> kind (frame, thumbnail, crop) -> the first picture of that kind."""
    media: dict[str, dict[str, Media]] = {frame_id: {} for frame_id in frame_ids}
    for item in rows_where_in(session, select(Media).order_by(Media.id), Media.detection_id, frame_ids):
        media[item.detection_id].setdefault(item.kind, item)
    return media


def picture(media: dict[str, Media]) -> Media | None:
    """The best whole-frame picture: the full frame if the trap sent it, else the thumbnail."""
    return media.get("frame") or media.get("thumbnail")
