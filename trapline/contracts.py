"""The wire contracts every Trapline part shares: MQTT topics and message payloads.

This module is the only place the contracts live (see DESIGN.md); the trap and the server both
import it. Topic helpers are pure functions; payloads are pydantic models that reject anything
off-contract, so a malformed message fails loudly at the edge of the system.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, field_validator

DEFAULT_PREFIX = "trapline"
DETECTIONS_SCHEMA: Final = "trapline.detections/1"
SEQUENCES_SCHEMA: Final = "trapline.sequences/1"
HEARTBEAT_SCHEMA: Final = "trapline.heartbeat/1"

# Longest values on the wire. The server stores them in columns of exactly these sizes, so a
# message that validates always fits (a too-long field must be a dead letter, not a failed batch).
ID_MAX = 160
CATEGORY_MAX = 64
FILE_MAX = 1024
MODEL_NAME_MAX = 100
VERSION_MAX = 40
REASON_MAX = 500

# Device ids end up in topic levels, file names and SQL: keep them boring.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

TopicKind = Literal["status", "detections", "sequences", "heartbeat", "ota", "cmd/model"]
TOPIC_KINDS: tuple[TopicKind, ...] = (
    "status",
    "detections",
    "sequences",
    "heartbeat",
    "ota",
    "cmd/model",
)
# QoS and retain flag per topic kind, as DESIGN.md's MQTT table says.
TOPIC_QOS: dict[TopicKind, int] = {
    "status": 1,
    "detections": 1,
    "sequences": 1,
    "heartbeat": 0,
    "ota": 1,
    "cmd/model": 1,
}
TOPIC_RETAIN: dict[TopicKind, bool] = {kind: kind in ("status", "cmd/model") for kind in TOPIC_KINDS}


def is_valid_device_id(device_id: str) -> bool:
    """True when `device_id` may be used as a topic level."""
    return bool(DEVICE_ID_PATTERN.match(device_id))


def topic(prefix: str, device_id: str, kind: TopicKind) -> str:
    """The topic a device publishes (or receives) `kind` messages on."""
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}: use letters, digits, '_', '.', '-'")
    if not prefix or any(ch in prefix for ch in "#+"):
        raise ValueError(f"invalid topic prefix {prefix!r}")
    return f"{prefix}/{device_id}/{kind}"


def parse_topic(prefix: str, value: str) -> tuple[str, TopicKind] | None:
    """Split a topic into (device_id, kind); None when it is not a Trapline topic."""
    head = prefix + "/"
    if not value.startswith(head):
        return None
    device_id, _, kind = value[len(head) :].partition("/")
    if not is_valid_device_id(device_id) or kind not in TOPIC_KINDS:
        return None
    return device_id, kind  # type: ignore[return-value,unused-ignore]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """ISO 8601 with milliseconds and an explicit offset, as in the contract's examples."""
    if ts.tzinfo is None:
        raise ValueError("timestamps on the wire must carry a timezone")
    return ts.isoformat(timespec="milliseconds")


def _require_timezone(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamp must carry a timezone offset")
    return ts


# On the wire: ISO 8601 with milliseconds and an explicit offset ("...T03:14:07.120+00:00").
Timestamp = Annotated[
    datetime,
    AfterValidator(_require_timezone),
    PlainSerializer(lambda ts: iso(ts), return_type=str, when_used="json"),
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]


class ModelRef(_Message):
    """Which model produced a result (or is installed)."""

    name: str = Field(min_length=1, max_length=MODEL_NAME_MAX)
    version: str = Field(min_length=1, max_length=VERSION_MAX)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Detection(_Message):
    """One box. `bbox` follows MegaDetector: [x_min, y_min, width, height], normalised, top-left."""

    category: str = Field(min_length=1, max_length=CATEGORY_MAX)
    conf: UnitFloat
    bbox: tuple[UnitFloat, UnitFloat, UnitFloat, UnitFloat]

    @field_validator("bbox")
    @classmethod
    def _inside_frame(cls, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x, y, w, h = box
        # a little slack for float rounding at the right/bottom edge
        if x + w > 1.0 + 1e-6 or y + h > 1.0 + 1e-6:
            raise ValueError(f"bbox {box} reaches outside the frame")
        return box


class ImageInfo(_Message):
    file: str = Field(max_length=FILE_MAX)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    night: bool


class DetectionMessage(_Message):
    """One message per processed frame on `<prefix>/<device>/detections`. `id` is idempotent."""

    schema_: Literal["trapline.detections/1"] = Field(DETECTIONS_SCHEMA, alias="schema")
    id: str = Field(min_length=3, max_length=ID_MAX)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN.pattern)
    captured_at: Timestamp
    processed_at: Timestamp
    sequence_id: str = Field(max_length=ID_MAX)
    frame_index: int = Field(ge=0)
    image: ImageInfo
    model: ModelRef
    inference_ms: float = Field(ge=0)
    detections: list[Detection] = Field(max_length=1000)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class CategorySummary(_Message):
    max_count: int = Field(ge=0)
    best_conf: UnitFloat


class SequenceSummary(_Message):
    """One message per closed burst on `<prefix>/<device>/sequences`."""

    schema_: Literal["trapline.sequences/1"] = Field(SEQUENCES_SCHEMA, alias="schema")
    sequence_id: str = Field(max_length=ID_MAX)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN.pattern)
    first_frame_at: Timestamp
    last_frame_at: Timestamp
    frame_count: int = Field(gt=0)
    categories: dict[str, CategorySummary]
    mean_class_probabilities: dict[str, UnitFloat]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


DeviceState = Literal["online", "offline", "stopped"]


class StatusMessage(_Message):
    """Retained on `<prefix>/<device>/status`; the Last Will carries state `offline`."""

    state: DeviceState
    ts: Timestamp
    agent_version: str = Field(max_length=VERSION_MAX)
    model: ModelRef | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class Heartbeat(_Message):
    """QoS 0 on `<prefix>/<device>/heartbeat`: how the trap is doing."""

    schema_: Literal["trapline.heartbeat/1"] = Field(HEARTBEAT_SCHEMA, alias="schema")
    ts: Timestamp
    uptime_s: float = Field(ge=0)
    frames_processed: int = Field(ge=0)
    frames_quarantined: int = Field(ge=0)
    spool_depth: int = Field(ge=0)
    spool_bytes: int = Field(ge=0)
    dropped: int = Field(ge=0)
    disk_free_bytes: int | None = None
    cpu_temp_c: float | None = None
    last_error: str | None = Field(None, max_length=500)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


OtaStage = Literal["downloading", "verifying", "installed", "failed", "rolled_back"]


class OtaProgress(_Message):
    ts: Timestamp
    version: str = Field(max_length=VERSION_MAX)
    stage: OtaStage
    reason: str | None = Field(None, max_length=REASON_MAX)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class ModelCommand(_Message):
    """Retained on `<prefix>/<device>/cmd/model`: the release the trap should run."""

    version: str = Field(max_length=VERSION_MAX)
    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: str

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
