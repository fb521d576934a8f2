"""Turn one MQTT message into a typed contract object, or a reason it is a dead letter. Pure.

Nothing a trap sends may raise out of here: every failure is a `Rejected` with a reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ValidationError

from trapline.contracts import TOPICS, TopicKind, parse_payload, parse_topic

log = logging.getLogger(__name__)

REASON_LIMIT = 500


@dataclass(frozen=True)
class Accepted:
    device_id: str
    kind: TopicKind
    message: BaseModel
    topic: str  # the raw message, kept in case storing it is refused later (unknown device)
    payload: bytes
    # when the server received it: the order of device states, whatever the trap's clock says
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Rejected:
    reason: str


def _describe(kind: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":  # not JSON, not UTF-8, or nested too deep
        return f"not JSON: {first['msg']}"
    where = ".".join(str(p) for p in first["loc"]) or "(payload)"
    return f"off-contract {kind}: {where}: {first['msg']} ({exc.error_count()} errors)"


def validate(
    prefix: str, topic: str, payload: bytes, max_bytes: int, received_at: datetime | None = None
) -> Accepted | Rejected:
    parsed = parse_topic(prefix, topic)
    if parsed is None:
        return Rejected(f"not a Trapline topic: {topic[:200]!r}")
    device_id, kind = parsed
    if not TOPICS[kind].uplink:
        return Rejected(f"{kind} is not a trap-to-server topic")
    if len(payload) > max_bytes:
        return Rejected(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        message = parse_payload(kind, payload)
    except ValidationError as exc:
        return Rejected(_describe(kind, exc)[:REASON_LIMIT])
    except Exception as exc:  # a hostile payload must never stop ingest for the whole fleet
        log.exception("validating a %s payload raised", kind)
        return Rejected(f"unreadable {kind}: {type(exc).__name__}: {exc}"[:REASON_LIMIT])
    # a trap may speak only for itself: the topic's device and the payload's must agree
    claimed = getattr(message, "device_id", device_id)
    if claimed != device_id:
        return Rejected(f"topic device {device_id!r} but payload device {claimed!r} (spoofing?)")
    return Accepted(device_id, kind, message, topic, payload, received_at or datetime.now(UTC))
