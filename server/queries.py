"""Read queries several parts share (API, jobs, exports)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from server.models import Detection, DetectionFrame


def frames_in(since: datetime | None, until: datetime | None) -> Select[Any]:
    """Frames captured in [since, until), oldest first per trap."""
    query = select(DetectionFrame).order_by(DetectionFrame.device_id, DetectionFrame.captured_at)
    if since:
        query = query.where(DetectionFrame.captured_at >= since)
    if until:
        query = query.where(DetectionFrame.captured_at < until)
    return query


def boxes_by_frame(session: Session, frame_ids: Sequence[str]) -> dict[str, list[Detection]]:
    boxes: dict[str, list[Detection]] = {frame_id: [] for frame_id in frame_ids}
    query = select(Detection).where(Detection.frame_id.in_(frame_ids)).order_by(Detection.id)
    for det in session.scalars(query):
        boxes[det.frame_id].append(det)
    return boxes
