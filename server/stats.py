"""Aggregates the dashboard charts: activity over time, diel activity, trap-days, fleet health.

Each is one grouped query (the database does the counting); results are small (days x traps x
categories, or 24 hours x traps), never a row per frame.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, extract, func, or_, select
from sqlalchemy.orm import Session

from trapline.server.models import Deployment, Detection, DetectionFrame, HeartbeatSample, Label


@dataclass(frozen=True)
class Window:
    """Which frames a chart counts: a time range and, optionally, one trap."""

    since: datetime | None = None
    until: datetime | None = None
    device_id: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None:
            query = query.where(DetectionFrame.captured_at >= self.since)
        if self.until is not None:
            query = query.where(DetectionFrame.captured_at < self.until)
        if self.device_id:
            query = query.where(DetectionFrame.device_id == self.device_id)
        return query


def activity_by_category(session: Session, window: Window) -> list[dict[str, Any]]:
    """Per UTC day and category: boxes and frames holding at least one."""
    day = func.date(DetectionFrame.captured_at)
    query = (
        select(
            day, Detection.category, func.count(Detection.id), func.count(func.distinct(DetectionFrame.id))
        )
        .join(Detection, Detection.frame_id == DetectionFrame.id)
        .group_by(day, Detection.category)
        .order_by(day, Detection.category)
    )
    return [
        {"day": str(d), "key": cat, "detections": n, "frames": f}
        for d, cat, n, f in session.execute(window.apply(query))
    ]


def activity_by_species(session: Session, window: Window) -> list[dict[str, Any]]:
    """Per UTC day and species a biologist labelled (a frame, or a whole sequence): frames."""
    day = func.date(DetectionFrame.captured_at)
    labelled = or_(Label.frame_id == DetectionFrame.id, Label.sequence_id == DetectionFrame.sequence_id)
    query = (
        select(day, Label.species, func.count(func.distinct(DetectionFrame.id)))
        .join(Label, labelled)
        .group_by(day, Label.species)
        .order_by(day, Label.species)
    )
    return [
        {"day": str(d), "key": species, "detections": n, "frames": n}
        for d, species, n in session.execute(window.apply(query))
    ]


def solar_offsets(session: Session) -> dict[str, int]:
    """Per trap, whole hours from UTC to local solar time, from its latest deployment's longitude."""
    offsets: dict[str, int] = {}
    rows = session.execute(
        select(Deployment.device_id, Deployment.longitude)
        .where(Deployment.longitude.is_not(None))
        .order_by(Deployment.start)
    )
    for device_id, longitude in rows:
        if longitude is not None:
            offsets[device_id] = round(longitude / 15)  # the sun moves 15 degrees an hour
    return offsets


def diel_activity(session: Session, window: Window, category: str | None) -> dict[str, Any]:
    """Frames with a detection by hour of day, split by the trap's own day/night flag (IR frames).

    Hours are local solar time where the trap has a deployment with a longitude (UTC otherwise),
    so traps on different continents add up into one daily rhythm."""
    hour = extract("hour", DetectionFrame.captured_at)
    query: Any = (
        select(DetectionFrame.device_id, hour, DetectionFrame.night, func.count(DetectionFrame.id))
        .where(DetectionFrame.detection_count > 0)
        .group_by(DetectionFrame.device_id, hour, DetectionFrame.night)
    )
    if category:
        query = query.where(DetectionFrame.categories.contains(f",{category},"))
    offsets = solar_offsets(session)
    day, night = [0] * 24, [0] * 24
    solar = set()
    for device_id, utc_hour, is_night, count in session.execute(window.apply(query)):
        if device_id in offsets:
            solar.add(device_id)
        local = (int(utc_hour) + offsets.get(device_id, 0)) % 24
        (night if is_night else day)[local] += count
    return {"hours": list(range(24)), "day": day, "night": night, "solar_time_traps": sorted(solar)}


def trap_days(session: Session, window: Window) -> list[dict[str, Any]]:
    """Frames and frames with a detection per trap per UTC day: a missing day is a silent trap."""
    day = func.date(DetectionFrame.captured_at)
    query = (
        select(
            DetectionFrame.device_id,
            day,
            func.count(DetectionFrame.id),
            func.count(DetectionFrame.id).filter(DetectionFrame.detection_count > 0),
        )
        .group_by(DetectionFrame.device_id, day)
        .order_by(DetectionFrame.device_id, day)
    )
    return [
        {"device_id": dev, "day": str(d), "frames": n, "with_detections": k}
        for dev, d, n, k in session.execute(window.apply(query))
    ]


def heartbeat_history(
    session: Session, device_ids: list[str] | None, since: datetime | None
) -> dict[str, list[dict[str, Any]]]:
    """Per trap, its kept heartbeat samples, oldest first."""
    query = select(HeartbeatSample).order_by(HeartbeatSample.device_id, HeartbeatSample.received_at)
    if device_ids is not None:
        query = query.where(HeartbeatSample.device_id.in_(device_ids))
    if since is not None:
        query = query.where(HeartbeatSample.received_at >= since)
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in session.scalars(query):
        history[row.device_id].append(
            {
                "at": row.received_at.isoformat(),
                "spool_depth": row.spool_depth,
                "dropped": row.dropped,
                "frames_processed": row.frames_processed,
                "disk_free_bytes": row.disk_free_bytes,
                "cpu_temp_c": row.cpu_temp_c,
                "model_version": row.model_version,
            }
        )
    return dict(history)


def current_deployments(session: Session) -> dict[str, Deployment]:
    """Per trap, where it stands now (its latest deployment with coordinates)."""
    latest: dict[str, Deployment] = {}
    query = (
        select(Deployment)
        .where(Deployment.latitude.is_not(None), Deployment.longitude.is_not(None))
        .order_by(Deployment.start)
    )
    for row in session.scalars(query):
        latest[row.device_id] = row
    return latest
