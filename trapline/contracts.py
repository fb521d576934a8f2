"""The wire contracts every Trapline part shares: MQTT topics and message payloads.

This module is the only place the contracts live (see DESIGN.md); the trap and the server both
import it. Topic helpers are pure functions; payloads are pydantic models that reject anything
off-contract, so a malformed message fails loudly at the edge of the system.
"""

from __future__ import annotations

import functools
import hashlib
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
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
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

# Pictures a trap uploads over HTTP (`POST /api/v1/media`, form field `kind`) for the frame whose
# detection message id is the `detection_id` field: the whole frame, a thumbnail of it, a crop of one
# box, or a `candidate`: a square crop of a box below the model's threshold, sent last, so reviewers
# can find animals the model missed.
MediaKind = Literal["frame", "thumbnail", "crop", "candidate"]
MEDIA_KINDS: Final[tuple[MediaKind, ...]] = ("frame", "thumbnail", "crop", "candidate")

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
    # True when the trap's clock had not been set when it processed the frame (a Pi without an RTC
    # before NTP reads 1970) or the capture time predates any real capture: the timestamps are
    # kept as read, and must not be trusted or used to order anything.
    clock_unsynced: bool = False

    @model_validator(mode="after")
    def _ids_of_this_device(self) -> DetectionMessage:
        _owned_by(self.device_id, self.id, self.sequence_id)
        return self

    @model_serializer(mode="wrap")
    def _flag_only_when_set(self, handler: SerializerFunctionWrapHandler, _info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and not self.clock_unsynced:
            data.pop("clock_unsynced", None)  # the usual case stays exactly DESIGN.md's message
        return data


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

    `ts` is the trap's clock when it sent the status: shown, never used to order states (the server
    orders by arrival). The Last Will has no `ts`: the broker sends it long after it was written,
    and only the receiver knows when."""

    state: DeviceState
    ts: Timestamp | None = None
    agent_version: Text = Field(max_length=VERSION_MAX)
    model: ModelRef | None = None

    @model_serializer(mode="wrap")
    def _no_empty_ts(self, handler: SerializerFunctionWrapHandler, _info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and self.ts is None:
            data.pop("ts", None)
        return data


ViewState = Literal["ok", "shifted", "blocked"]


class ViewCheck(_Message):
    """The last comparison of a daytime frame with the scene's reference photo (tamper, drift)."""

    state: ViewState
    features_in_place: UnitFloat  # share of the reference's features found where they were
    detail: UnitFloat  # the frame's edge energy against the reference's (a covered lens: near 0)
    checked_at: Timestamp


class Heartbeat(_Message):
    """QoS 0 on `<prefix>/<device>/heartbeat`: how the trap is doing.

    `view` was added later: a trap leaves it out until it has compared a frame with its reference
    photo, so a heartbeat without it still reads as before."""

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
    # Added later; absent from older traps. Messages the broker refused for good (MQTT 5 PUBACK
    # >= 0x80) or the trap set aside (a topic it may no longer publish on): kept on the trap.
    dead_letters: ByteCount | None = None
    # spooled messages moved to this trap's current topics after its device id or prefix changed
    rehomed: ByteCount | None = None
    # damaged spools moved aside (each replaced by a fresh one) and still kept beside the spool
    spool_resets: ByteCount | None = None
    view: ViewCheck | None = None

    def to_json(self) -> bytes:
        # no `view` key at all until there is one: servers older than the field still accept it
        exclude = {"view"} if self.view is None else None
        return self.model_dump_json(by_alias=True, exclude=exclude).encode()


# --- over-the-air model updates ------------------------------------------------------------------
MODEL_COMMAND_SCHEMA: Final = "trapline.cmd.model/1"
ROLLBACK_SCHEMA: Final = "trapline.rollback/1"
# Release versions are dotted numbers ("3", "1.10.2") so a trap can tell newer from older.
RELEASE_VERSION_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$"
ReleaseVersion = Annotated[str, Field(pattern=RELEASE_VERSION_PATTERN)]
# A release key's id: the first 16 hex digits of the SHA-256 of its raw 32-byte Ed25519 public key
# (trapline/keyring.py), so an id cannot lie about the key it names.
KEY_ID_HEX: Final = 16
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
Ed25519Signature = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$", description="base64 Ed25519")]
MAX_TRUSTED_KEYS = 32


def raw_key_id(raw_public_key: bytes) -> str:
    """The id of the Ed25519 public key whose raw 32 bytes are `raw_public_key`."""
    return hashlib.sha256(raw_public_key).hexdigest()[:KEY_ID_HEX]


# a bundle URL: a path on the trap's own server, or an absolute http(s) URL
BundleUrl = Annotated[str, Field(max_length=FILE_MAX, pattern=r"^(/|https?://)[!-~]+$")]
MAX_BUNDLE_BYTES = 4 * 1024**3
MAX_DOWNLOAD_DELAY_S = 7 * 24 * 3600


def version_key(version: str) -> tuple[int, ...] | None:
    """A release version as numbers to compare ("1.0" == "1"); None when it is not a release version."""
    if not re.match(RELEASE_VERSION_PATTERN, version):
        return None
    parts = [int(part) for part in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def rollback_statement(name: str, version: str, model_sha256: str) -> bytes:
    """What a release key signs to allow one model (name, version, model file hash) back onto traps
    that run a newer one. It names the model, not an archive, so any packing of the bundle will do."""
    return f"{ROLLBACK_SCHEMA}\n{name}\n{version}\n{model_sha256}\n".encode()


class RollbackGrant(_Message):
    """A signed rollback: a trusted release key's Ed25519 signature over `rollback_statement`."""

    key_id: KeyId
    signature: Ed25519Signature


class ModelCommand(_Message):
    """Retained on `<prefix>/<device>/cmd/model`: the release the trap should run.

    Nothing here is trusted on its own: the bundle's signed manifest must agree with name, version
    and model hash, and a version lower than the running one needs a `rollback` grant that a
    trusted release key signed. The unsigned fields let a trap refuse early (before downloading)."""

    schema_: Literal["trapline.cmd.model/1"] = Field(MODEL_COMMAND_SCHEMA, alias="schema")
    release_id: int = Field(ge=1, le=INT32_MAX)
    rollout_id: int | None = Field(None, ge=1, le=INT32_MAX)
    name: Text = Field(min_length=1, max_length=MODEL_NAME_MAX)
    version: ReleaseVersion
    url: BundleUrl
    sha256: Sha256  # of the bundle archive (.tar.gz) the URL serves
    size: int = Field(gt=0, le=MAX_BUNDLE_BYTES)
    model_sha256: Sha256  # of the model file inside: a trap already running it has nothing to do
    key_id: KeyId  # the release key that signed the manifest
    runtime: str = Field(pattern=r"^[a-z0-9-]{1,16}$", description="model format key (trapline/formats.py)")
    min_agent_version: ReleaseVersion | None = None
    rollback: RollbackGrant | None = None
    download_delay_s: int = Field(0, ge=0, le=MAX_DOWNLOAD_DELAY_S)  # spreads a fleet's downloads
    issued_at: Timestamp


OtaStage = Literal[
    "received",  # a new desired release
    "waiting",  # for the update window or the download delay
    "downloading",
    "verifying",  # archive hash, manifest signature, file hashes, version and compatibility
    "installing",  # into the inactive slot
    "testing",  # self-test on the bundle's reference frames
    "switched",  # running the new model, inside the health window
    "installed",  # health window passed: done
    "retrying",  # a transient failure (network, disk full): tried again later
    "failed",  # gave up on this release after repeated transient failures
    "refused",  # will not install: tampered, downgrade, incompatible, malformed command
    "rolled_back",  # self-test failed, crashed or too slow after the switch: back on the old model
    # key rotation (cmd/keys), not a model update: no release_id; key_sequence says which statement
    "keys_applied",  # the trap trusts the keyring after statement `key_sequence` (`trusted_keys`)
    "keys_refused",  # a statement (or a malformed cmd/keys) was refused; `reason` says why
]
OTA_FAILURE_STAGES: Final[tuple[OtaStage, ...]] = ("failed", "refused", "rolled_back")
KEY_ROTATION_STAGES: Final[tuple[OtaStage, ...]] = ("keys_applied", "keys_refused")


class OtaProgress(_Message):
    """On `<prefix>/<device>/ota`: every step of an update, and why one failed."""

    ts: Timestamp
    release_id: int | None = Field(None, ge=1, le=INT32_MAX)
    version: Text | None = Field(None, max_length=VERSION_MAX)
    stage: OtaStage
    reason: Text | None = Field(None, max_length=REASON_MAX)
    bytes_done: ByteCount | None = None
    bytes_total: ByteCount | None = None
    model: ModelRef | None = None  # what the trap runs after this step
    previous: ModelRef | None = None  # what it ran before the switch (kept for going back)
    switch_ms: FiniteFloat | None = Field(None, ge=0, le=1e9)
    # Added with key rotation (stages keys_*): left out of the JSON when empty, so a model-update
    # report still reads exactly as before to a server older than these fields.
    key_sequence: int | None = Field(None, ge=0, le=INT32_MAX)
    trusted_keys: list[KeyId] | None = Field(None, max_length=MAX_TRUSTED_KEYS)

    def to_json(self) -> bytes:
        exclude = {name for name in ("key_sequence", "trusted_keys") if getattr(self, name) is None}
        return self.model_dump_json(by_alias=True, exclude=exclude or None).encode()


# --- key rotation ----------------------------------------------------------------------------------
KEY_ROTATION_SCHEMA: Final = "trapline.key-rotation/1"
KEYS_COMMAND_SCHEMA: Final = "trapline.cmd.keys/1"
MAX_ADDED_KEYS = 8
MAX_REVOKED_KEYS = 16
# the retained cmd/keys carries the newest statements, so a trap away for several rotations
# catches up; the bounds keep the whole command under the trap's 64 KiB command limit
MAX_KEY_STATEMENTS = 32
RawPublicKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="raw Ed25519 key, hex")]


def key_rotation_statement(
    sequence: int, issued_at: datetime, signer: str, add: dict[str, str], revoke: list[str]
) -> bytes:
    """What a release key signs to change the traps' keyring: one line per field, keys sorted, the
    time in UTC with milliseconds (as it travels). Nothing in it depends on JSON formatting."""
    lines = [
        KEY_ROTATION_SCHEMA,
        f"sequence {sequence}",
        f"issued_at {iso(issued_at.astimezone(UTC))}",
        f"signer {signer}",
        *(f"add {identity} {add[identity]}" for identity in sorted(add)),
        *(f"revoke {identity}" for identity in sorted(revoke)),
    ]
    return ("\n".join(lines) + "\n").encode()


class AddedKey(_Message):
    key_id: KeyId
    public_key: RawPublicKey

    @model_validator(mode="after")
    def _id_names_the_key(self) -> AddedKey:
        if raw_key_id(bytes.fromhex(self.public_key)) != self.key_id:
            raise ValueError(f"key id {self.key_id} is not the id of the key given with it")
        return self


def _no_repeats(values: list[str], what: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} more than once: {', '.join(repeated)}")


class KeyRotationStatement(_Message):
    """A change of the traps' keyring (add these keys, revoke those ids), signed by a release key
    the trap trusts when it applies the statement. `sequence` only grows: a trap refuses a
    statement not newer than the last one it applied (replay)."""

    schema_: Literal["trapline.key-rotation/1"] = Field(KEY_ROTATION_SCHEMA, alias="schema")
    sequence: int = Field(ge=1, le=INT32_MAX)
    issued_at: Timestamp
    add: list[AddedKey] = Field(default_factory=list, max_length=MAX_ADDED_KEYS)
    revoke: list[KeyId] = Field(default_factory=list, max_length=MAX_REVOKED_KEYS)
    key_id: KeyId  # the signer
    signature: Ed25519Signature

    @model_validator(mode="after")
    def _a_sound_change(self) -> KeyRotationStatement:
        if not self.add and not self.revoke:
            raise ValueError("a key rotation statement must add or revoke a key")
        added = [key.key_id for key in self.add]
        _no_repeats(added, "key added")
        _no_repeats(self.revoke, "key revoked")
        both = sorted(set(added) & set(self.revoke))
        if both:
            raise ValueError(f"keys both added and revoked: {', '.join(both)}")
        if self.key_id in self.revoke:
            # it would leave a trap trusting a statement whose signer it no longer trusts; another
            # trusted key must revoke it (README, "Release keys")
            raise ValueError(f"a statement may not revoke the key that signs it ({self.key_id})")
        return self

    def signed_bytes(self) -> bytes:
        return key_rotation_statement(
            self.sequence,
            self.issued_at,
            self.key_id,
            {key.key_id: key.public_key for key in self.add},
            list(self.revoke),
        )


class KeysCommand(_Message):
    """Retained on `<prefix>/<device>/cmd/keys`: the newest key rotation statements, oldest first.

    A trap applies, in order, each one newer than the last it applied, each verified against the
    keyring as the ones before left it; the unsigned list itself is not trusted."""

    schema_: Literal["trapline.cmd.keys/1"] = Field(KEYS_COMMAND_SCHEMA, alias="schema")
    statements: list[KeyRotationStatement] = Field(min_length=1, max_length=MAX_KEY_STATEMENTS)

    @field_validator("statements")
    @classmethod
    def _in_order(cls, statements: list[KeyRotationStatement]) -> list[KeyRotationStatement]:
        sequences = [s.sequence for s in statements]
        if any(b <= a for a, b in zip(sequences, sequences[1:], strict=False)):
            raise ValueError(f"statements must come in growing sequence order, not {sequences}")
        return statements


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
    "status", "detections", "sequences", "heartbeat", "ota", "cmd/model", "cmd/ignore-regions", "cmd/keys"
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
    TopicSpec(
        "ota", "device", 1, False, OtaProgress, "model update progress and failures; key rotation outcomes"
    ),
    TopicSpec(
        "cmd/model",
        "server",
        1,
        True,
        ModelCommand,
        "the release the trap should run; an empty retained payload clears it",
    ),
    TopicSpec(
        "cmd/ignore-regions", "server", 1, True, IgnoreRegionsCommand, "static false positives to demote"
    ),
    TopicSpec(
        "cmd/keys",
        "server",
        1,
        True,
        KeysCommand,
        "signed key rotation statements: the release keys the trap trusts; outcome reported on `ota`",
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


@functools.lru_cache(maxsize=8192)  # ingest asks for the same few topics per trap, all day
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
