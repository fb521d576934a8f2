"""The wire contracts every Trapline part shares: MQTT topics and message payloads.

This module is the only place the contracts live (see DESIGN.md); the trap and the server both
import it. Topic helpers are pure functions; payloads are pydantic models that reject anything
off-contract, so a malformed message fails loudly at the edge of the system.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

DEFAULT_PREFIX = "trapline"
DETECTIONS_SCHEMA: Final = "trapline.detections/1"
SEQUENCES_SCHEMA: Final = "trapline.sequences/1"
HEARTBEAT_SCHEMA: Final = "trapline.heartbeat/1"
IGNORE_REGIONS_SCHEMA: Final = "trapline.ignore-regions/1"

# The categories a trap publishes (MegaDetector's three). A model's manifest maps its own classes
# onto these; the server, the exports and the training sets use exactly this list.
Category = Literal["animal", "person", "vehicle"]
CATEGORIES: Final[tuple[Category, ...]] = ("animal", "person", "vehicle")
# MegaDetector's numbering of the same categories (batch output JSON's "detection_categories"):
# training reads it, the server's export writes it
MEGADETECTOR_CATEGORIES: Final[dict[str, Category]] = {"1": "animal", "2": "person", "3": "vehicle"}

# Longest values on the wire. The server stores them in columns of exactly these sizes, so a
# message that validates always fits (a too-long field must be a dead letter, not a failed batch).
ID_MAX = 160
CATEGORY_MAX = 64
FILE_MAX = 1024
MODEL_NAME_MAX = 100
VERSION_MAX = 40
REASON_MAX = 500
# Numbers must fit the database too: 32-bit INTEGER columns, finite floats, years a
# timestamp column holds on SQLite and PostgreSQL alike (1970: a Pi without a clock before NTP).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2199, 12, 31, tzinfo=UTC)
MAX_CLASSES = 1000

# Device ids end up in topic levels, file names and SQL: keep them boring.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Message and sequence ids: "<device>:<rest>", a safe alphabet (they become file and archive names).
MESSAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}:[A-Za-z0-9_.:-]{1,95}$")


def as_category(name: str) -> Category | None:
    """`name` as a published category, or None when it is not one."""
    for category in CATEGORIES:
        if category == name:
            return category
    return None


def is_valid_device_id(device_id: str) -> bool:
    """True when `device_id` may be used as a topic level."""
    return bool(DEVICE_ID_PATTERN.match(device_id))


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """ISO 8601 with milliseconds and an explicit offset, as in the contract's examples."""
    if ts.tzinfo is None:
        raise ValueError("timestamps on the wire must carry a timezone")
    return ts.isoformat(timespec="milliseconds")


def _storable_instant(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamp must carry a timezone offset")
    try:
        in_utc = ts.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:30+01:00 is in year 0 once in UTC
        raise ValueError("timestamp is outside the years a database can store") from exc
    if not EARLIEST <= in_utc <= LATEST:
        raise ValueError(f"timestamp must lie between {EARLIEST.year} and {LATEST.year}")
    return ts


# Unicode's control characters (category Cc: U+0000-U+001F, U+007F-U+009F) but tab and newline;
# one regular expression instead of a category lookup per character (ingest validates every string)
_CONTROL_CHARACTER = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _no_control_characters(value: str) -> str:
    # NUL is refused by PostgreSQL; the others have no business in names, ids or messages
    if _CONTROL_CHARACTER.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# On the wire: ISO 8601 with milliseconds and an explicit offset ("...T03:14:07.120+00:00").
Timestamp = Annotated[
    datetime,
    AfterValidator(_storable_instant),
    PlainSerializer(lambda ts: iso(ts), return_type=str, when_used="json"),
]
Text = Annotated[str, AfterValidator(_no_control_characters)]
FiniteFloat = Annotated[float, AfterValidator(_finite)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
ByteCount = Annotated[int, Field(ge=0, le=INT64_MAX)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN.pattern)]
MessageId = Annotated[str, Field(min_length=3, max_length=ID_MAX, pattern=MESSAGE_ID_PATTERN.pattern)]
ClassName = Annotated[Text, Field(min_length=1, max_length=CATEGORY_MAX)]


class _Message(BaseModel):
    # strict: "0.5" is not a number and 1.0 is not an integer; a message that validates fits the
    # database (see the bounds above)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def _owned_by(device_id: str, *ids: str) -> None:
    for value in ids:
        if not value.startswith(device_id + ":"):
            raise ValueError(f"id {value!r} does not belong to device {device_id!r}")


class ModelRef(_Message):
    """Which model produced a result (or is installed)."""

    name: Text = Field(min_length=1, max_length=MODEL_NAME_MAX)
    version: Text = Field(min_length=1, max_length=VERSION_MAX)
    sha256: Sha256


class Detection(_Message):
    """One box. `bbox` follows MegaDetector: [x_min, y_min, width, height], normalised, top-left."""

    category: Category
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
    file: Text = Field(max_length=FILE_MAX)
    sha256: Sha256
    width: int = Field(gt=0, le=INT32_MAX)
    height: int = Field(gt=0, le=INT32_MAX)
    night: bool


class DetectionMessage(_Message):
    """One message per processed frame on `<prefix>/<device>/detections`. `id` is idempotent."""

    schema_: Literal["trapline.detections/1"] = Field(DETECTIONS_SCHEMA, alias="schema")
    id: MessageId
    device_id: DeviceId
    captured_at: Timestamp
    processed_at: Timestamp
    sequence_id: MessageId
    frame_index: Count
    image: ImageInfo
    model: ModelRef
    inference_ms: FiniteFloat = Field(ge=0, le=1e9)
    detections: list[Detection] = Field(max_length=1000)

    @model_validator(mode="after")
    def _ids_of_this_device(self) -> DetectionMessage:
        _owned_by(self.device_id, self.id, self.sequence_id)
        return self


class CategorySummary(_Message):
    max_count: Count
    best_conf: UnitFloat


class SequenceSummary(_Message):
    """One message per closed burst on `<prefix>/<device>/sequences`."""

    schema_: Literal["trapline.sequences/1"] = Field(SEQUENCES_SCHEMA, alias="schema")
    sequence_id: MessageId
    device_id: DeviceId
    first_frame_at: Timestamp
    last_frame_at: Timestamp
    frame_count: int = Field(gt=0, le=INT32_MAX)
    categories: dict[Category, CategorySummary]
    mean_class_probabilities: dict[ClassName, UnitFloat] = Field(max_length=MAX_CLASSES)

    @model_validator(mode="after")
    def _id_of_this_device(self) -> SequenceSummary:
        _owned_by(self.device_id, self.sequence_id)
        return self


DeviceState = Literal["online", "offline", "stopped"]


class StatusMessage(_Message):
    """Retained on `<prefix>/<device>/status`; the Last Will carries state `offline`.

    `ts` is the trap's clock: shown, never used to order states (the server orders by arrival)."""

    state: DeviceState
    ts: Timestamp
    agent_version: Text = Field(max_length=VERSION_MAX)
    model: ModelRef | None = None


class Heartbeat(_Message):
    """QoS 0 on `<prefix>/<device>/heartbeat`: how the trap is doing."""

    schema_: Literal["trapline.heartbeat/1"] = Field(HEARTBEAT_SCHEMA, alias="schema")
    ts: Timestamp
    uptime_s: FiniteFloat = Field(ge=0, le=1e12)
    frames_processed: ByteCount
    frames_quarantined: ByteCount
    spool_depth: ByteCount
    spool_bytes: ByteCount
    dropped: ByteCount
    disk_free_bytes: ByteCount | None = None
    cpu_temp_c: FiniteFloat | None = Field(None, ge=-100, le=200)
    last_error: Text | None = Field(None, max_length=REASON_MAX)


OtaStage = Literal["downloading", "verifying", "installed", "failed", "rolled_back"]


class OtaProgress(_Message):
    ts: Timestamp
    version: Text = Field(max_length=VERSION_MAX)
    stage: OtaStage
    reason: Text | None = Field(None, max_length=REASON_MAX)


class ModelCommand(_Message):
    """Retained on `<prefix>/<device>/cmd/model`: the release the trap should run."""

    version: Text = Field(max_length=VERSION_MAX)
    url: Text = Field(max_length=FILE_MAX)
    sha256: Sha256
    signature: Text = Field(max_length=1000)


# A look signature: the box's crop as 16x16 greyscale bytes, hex-encoded (row-major). Cheap to
# compute on a Pi; compared by normalised cross-correlation (edge/ignore_regions.py).
LOOK_SIDE: Final = 16
LookSignature = Annotated[str, Field(pattern=rf"^[0-9a-f]{{{2 * LOOK_SIDE * LOOK_SIDE}}}$")]
MAX_IGNORE_REGIONS = 200


class IgnoreRegion(_Message):
    """A static false positive of this camera that a reviewer marked "not an animal"."""

    bbox: tuple[UnitFloat, UnitFloat, UnitFloat, UnitFloat]
    signature: LookSignature
    source: MessageId  # the frame the reviewer saw it in


class IgnoreRegionsCommand(_Message):
    """Retained on `<prefix>/<device>/cmd/ignore-regions`: the whole memory, replaced each time.

    The trap demotes a detection overlapping a region (IoU >= `min_iou`) whose look correlates with
    the region's (>= `min_similarity`): the same stump in the same place, not an animal passing it."""

    schema_: Literal["trapline.ignore-regions/1"] = Field(IGNORE_REGIONS_SCHEMA, alias="schema")
    ts: Timestamp
    min_iou: UnitFloat = 0.5
    min_similarity: UnitFloat = 0.8
    regions: list[IgnoreRegion] = Field(max_length=MAX_IGNORE_REGIONS)


# --- the one table of topics ------------------------------------------------------------------
# Everything about a topic kind lives here: validation (server and trap), the ingest worker's
# subscriptions, the broker ACL and the agent's QoS/retain flags are all derived from it.
Writer = Literal["device", "server"]


TopicKind = Literal[
    "status", "detections", "sequences", "heartbeat", "ota", "cmd/model", "cmd/ignore-regions"
]


@dataclass(frozen=True)
class TopicSpec:
    kind: TopicKind
    writer: Writer  # a device writes its own uplink topics; only the server writes commands
    qos: int
    retain: bool
    payload: type[_Message]
    description: str

    @property
    def uplink(self) -> bool:
        return self.writer == "device"


_TOPIC_SPECS = (
    TopicSpec("status", "device", 1, True, StatusMessage, "online/offline/stopped; the Last Will"),
    TopicSpec("detections", "device", 1, False, DetectionMessage, "one message per processed frame"),
    TopicSpec("sequences", "device", 1, False, SequenceSummary, "one summary per closed burst"),
    TopicSpec("heartbeat", "device", 0, False, Heartbeat, "vital signs, best effort"),
    TopicSpec("ota", "device", 1, False, OtaProgress, "model update progress"),
    TopicSpec("cmd/model", "server", 1, True, ModelCommand, "the release the trap should run"),
    TopicSpec(
        "cmd/ignore-regions", "server", 1, True, IgnoreRegionsCommand, "static false positives to demote"
    ),
)
TOPICS: Final[dict[TopicKind, TopicSpec]] = {spec.kind: spec for spec in _TOPIC_SPECS}
TOPIC_KINDS: Final[tuple[TopicKind, ...]] = tuple(TOPICS)
UPLINK_KINDS: Final[tuple[TopicKind, ...]] = tuple(s.kind for s in _TOPIC_SPECS if s.uplink)
DOWNLINK_KINDS: Final[tuple[TopicKind, ...]] = tuple(s.kind for s in _TOPIC_SPECS if not s.uplink)


def topic(prefix: str, device_id: str, kind: TopicKind) -> str:
    """The topic a device publishes (or receives) `kind` messages on."""
    if not is_valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}: use letters, digits, '_', '.', '-'")
    if not prefix or any(ch in prefix for ch in "#+"):
        raise ValueError(f"invalid topic prefix {prefix!r}")
    if kind not in TOPICS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{prefix}/{device_id}/{kind}"


def parse_topic(prefix: str, value: str) -> tuple[str, TopicKind] | None:
    """Split a topic into (device_id, kind); None when it is not a Trapline topic."""
    head = prefix + "/"
    if not value.startswith(head):
        return None
    device_id, _, kind = value[len(head) :].partition("/")
    for spec in _TOPIC_SPECS:
        if spec.kind == kind and is_valid_device_id(device_id):
            return device_id, spec.kind
    return None


def parse_payload(kind: TopicKind, payload: bytes | str) -> Any:
    """The contract object a `kind` payload holds; pydantic.ValidationError when it breaks the
    contract (bad JSON, too deep, off-contract values)."""
    return TOPICS[kind].payload.model_validate_json(payload, strict=True)
