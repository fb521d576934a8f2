"""What the traps report on `ota`, kept per trap: a history row each, and the latest stage of the
release the trap should run (what rollouts judge)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from trapline.contracts import OtaProgress
from trapline.server.models import DeviceModelStatus, DeviceRelease


def record_progress(session: Session, device_id: str, message: OtaProgress, now: datetime) -> None:
    session.add(
        DeviceModelStatus(
            device_id=device_id,
            version=message.version or "",
            stage=message.stage,
            reason=message.reason,
            at=message.ts,
            release_id=message.release_id,
            received_at=now,
        )
    )
    target = session.get(DeviceRelease, device_id)
    if target is None or message.release_id is None or target.desired_release_id != message.release_id:
        return  # about a release the trap is no longer asked to run: history only
    target.stage, target.reason, target.stage_at = message.stage, message.reason, now
    if message.stage == "switched" and message.previous is not None:
        target.previous_model_name = message.previous.name
        target.previous_model_version = message.previous.version
    elif message.stage == "rolled_back" and message.previous is not None:
        target.previous_model_name = target.previous_model_version = None  # the trap dropped it
