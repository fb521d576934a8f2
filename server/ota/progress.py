"""What the traps report on `ota`, kept per trap: a history row each (stored once, however often
the broker delivers it), and the latest stage of the release the trap should run (what rollouts
judge). Key rotation outcomes (stages `keys_*`) go to the trap's keyring state instead
(server/ota/key_rotations.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from trapline.contracts import KEY_ROTATION_STAGES, OtaProgress
from trapline.server.models import DeviceRelease
from trapline.server.ota.key_rotations import record_key_report


def progress_row(device_id: str, message: OtaProgress, now: datetime) -> dict[str, Any] | None:
    """A device_model_status row (unique per device, version, stage and trap time); None for a
    key rotation report, which is not model history."""
    if message.stage in KEY_ROTATION_STAGES:
        return None
    return {
        "device_id": device_id,
        "version": message.version or "",
        "stage": message.stage,
        "reason": message.reason,
        "at": message.ts,
        "release_id": message.release_id,
        "received_at": now,
    }


def record_progress(session: Session, device_id: str, message: OtaProgress, now: datetime) -> None:
    """Move the trap's target on: the stage it reached of the release it should run, or the
    keyring it reported."""
    if message.stage in KEY_ROTATION_STAGES:
        record_key_report(session, device_id, message, now)
        return
    target = session.get(DeviceRelease, device_id)
    if target is None or message.release_id is None or target.desired_release_id != message.release_id:
        return  # about a release the trap is no longer asked to run: history only
    target.stage, target.reason, target.stage_at = message.stage, message.reason, now
    if message.stage == "switched" and message.previous is not None:
        target.previous_model_name = message.previous.name
        target.previous_model_version = message.previous.version
    elif message.stage == "rolled_back" and message.previous is not None:
        target.previous_model_name = target.previous_model_version = None  # the trap dropped it
