"""Spooled messages written for another home: the trap's device id or topic prefix changed while
the spool still held messages (a trap renamed, a fleet moved to another prefix).

The broker's ACL lets a trap publish only under `<prefix>/<its id>/`, so such rows would be refused
for ever. Rows of a kind the trap itself spools (detections, sequences, OTA progress) move to the
current topics, their ids and device id rewritten to the new name; anything else (a kind the trap
never spools, a payload that is off-contract) is set aside in the dead letters. Both are logged and
counted; the spool remembers its home, so this runs only when the home really changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from trapline.contracts import TOPICS, UPLINK_KINDS, TopicKind, is_valid_device_id, topic
from trapline.edge.spool import DetectionSpool, SpooledMessage

log = logging.getLogger(__name__)

# what the trap puts in its spool: its own reliable, not retained kinds
SPOOLED_KINDS: tuple[TopicKind, ...] = tuple(
    kind for kind in UPLINK_KINDS if TOPICS[kind].qos == 1 and not TOPICS[kind].retain
)
_REHOMED = "rehomed"
_ID_FIELDS = ("id", "sequence_id")


@dataclass(frozen=True)
class RehomeResult:
    rehomed: int
    set_aside: int


def _rehome_one(row: SpooledMessage, prefix: str, device_id: str) -> tuple[str, bytes] | str:
    """(new topic, new payload), or why the row must be set aside."""
    rest, _, kind = row.topic.rpartition("/")
    old_prefix, _, old_device = rest.rpartition("/")
    spooled = next((k for k in SPOOLED_KINDS if k == kind), None)
    if spooled is None or not old_prefix or not is_valid_device_id(old_device):
        return f"not a topic this trap spools: {row.topic[:200]!r}"
    model = TOPICS[spooled].payload
    try:
        message = model.model_validate_json(row.payload, strict=True)
    except ValidationError as exc:
        return f"off-contract {kind} payload: {exc.errors()[0]['msg']}"
    update: dict[str, str] = {}
    if old_device != device_id:
        if getattr(message, "device_id", old_device) != old_device:
            return f"payload of device {getattr(message, 'device_id', '?')!r} on {old_device!r}'s topic"
        if hasattr(message, "device_id"):
            update["device_id"] = device_id
        for field in _ID_FIELDS:
            value = getattr(message, field, None)
            if isinstance(value, str) and value.startswith(old_device + ":"):
                update[field] = device_id + value[len(old_device) :]
    try:
        # through JSON again, so the rewritten ids meet the contract (length, alphabet)
        moved = model.model_validate_json(message.model_copy(update=update).to_json(), strict=True)
    except ValidationError as exc:
        return f"cannot rewrite it for {device_id!r}: {exc.errors()[0]['msg']}"
    return topic(prefix, device_id, spooled), moved.to_json()


def rehome_spool(spool: DetectionSpool, prefix: str, device_id: str) -> RehomeResult:
    home, old_home = f"{prefix}/{device_id}", spool.home
    if old_home == home:
        return RehomeResult(0, 0)
    own = {topic(prefix, device_id, kind) for kind in SPOOLED_KINDS}
    rehomed = set_aside = 0
    homes: set[str] = set()
    for row in spool.rows_outside(own):
        homes.add(row.topic.rpartition("/")[0])
        outcome = _rehome_one(row, prefix, device_id)
        if isinstance(outcome, str):
            spool.dead_letter([row.id], f"set aside at start: {outcome}")
            set_aside += 1
        else:
            spool.rewrite(row.id, *outcome)
            rehomed += 1
    if rehomed:
        spool.set_state({_REHOMED: str(rehomed_total(spool) + rehomed)})
    spool.set_home(home)
    if rehomed or set_aside:
        log.warning(
            "spool %s held messages for %s: moved %d to %s/..., set %d aside as dead letters",
            spool.path,
            ", ".join(sorted(homes)[:3]) or old_home,
            rehomed,
            home,
            set_aside,
        )
    return RehomeResult(rehomed, set_aside)


def rehomed_total(spool: DetectionSpool) -> int:
    return int(spool.get_state(_REHOMED) or 0)
