"""Turn one MQTT message into a typed contract object, or a reason it is a dead letter. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from trapline.contracts import (
    DetectionMessage,
    Heartbeat,
    OtaProgress,
    SequenceSummary,
    StatusMessage,
    TopicKind,
    parse_topic,
)

_MODELS: dict[str, type[BaseModel]] = {
    "detections": DetectionMessage,
    "sequences": SequenceSummary,
    "status": StatusMessage,
    "heartbeat": Heartbeat,
    "ota": OtaProgress,
}


@dataclass(frozen=True)
class Accepted:
    device_id: str
    kind: TopicKind
    message: BaseModel
    topic: str  # the raw message, kept in case storing it is refused later (unknown device)
    payload: bytes


@dataclass(frozen=True)
class Rejected:
    reason: str


def validate(prefix: str, topic: str, payload: bytes, max_bytes: int) -> Accepted | Rejected:
    parsed = parse_topic(prefix, topic)
    if parsed is None:
        return Rejected(f"not a Trapline topic: {topic[:200]!r}")
    device_id, kind = parsed
    if kind not in _MODELS:
        return Rejected(f"{kind} is not a trap-to-server topic")
    if len(payload) > max_bytes:
        return Rejected(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(f"not JSON: {exc}"[:500])
    try:
        message = _MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Rejected(f"off-contract {kind}: {where}: {first['msg']} ({exc.error_count()} errors)"[:500])
    # a trap may speak only for itself: the topic's device and the payload's must agree
    claimed = getattr(message, "device_id", device_id)
    if claimed != device_id:
        return Rejected(f"topic device {device_id!r} but payload device {claimed!r} (spoofing?)")
    return Accepted(device_id, kind, message, topic, payload)
