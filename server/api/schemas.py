"""Response models of the API (what the OpenAPI document shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel


class DeviceHealth(BaseModel):
    id: str
    name: str | None
    state: str
    health: str  # online / offline / stale / stopped / unknown
    last_seen_at: datetime | None
    last_heartbeat_at: datetime | None
    agent_version: str | None
    model_name: str | None
    model_version: str | None
    spool_depth: int | None
    dropped: int | None
    frames_processed: int | None
    disk_free_bytes: int | None
    cpu_temp_c: float | None
    last_error: str | None
    clock_suspect: bool  # the trap's last status or heartbeat had a time before 2000 or far ahead
    # the trap's last tamper check (heartbeat `view`): ok / shifted / blocked; None before one
    view_state: str | None = None


class Box(BaseModel):
    category: str
    conf: float
    bbox: tuple[float, float, float, float]


class Frame(BaseModel):
    id: str
    device_id: str
    captured_at: datetime
    sequence_id: str
    frame_index: int
    image_file: str
    image_sha256: str
    width: int
    height: int
    night: bool
    model: str
    detections: list[Box]
    media: dict[str, str]  # kind -> sha256 of uploaded thumbnails/crops/frames
    clock_suspect: bool  # captured_at cannot be right: the trap's clock was not set (e.g. 1970)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):  # noqa: UP046 - pydantic generics on Python 3.11
    items: list[T]
    next_cursor: str | None


class SequenceOut(BaseModel):
    id: str
    device_id: str
    first_frame_at: datetime
    last_frame_at: datetime
    frame_count: int
    categories: dict[str, Any]
    mean_class_probabilities: dict[str, Any]


class DailyCount(BaseModel):
    day: str
    device_id: str
    category: str
    detections: int
    frames: int


class ModelOut(BaseModel):
    id: int
    name: str
    version: str
    sha256: str | None
    metrics: dict[str, Any]
    created_at: datetime


class MediaOut(BaseModel):
    sha256: str
    kind: str
    bytes: int
    stored: bool  # False when the same bytes were already there
