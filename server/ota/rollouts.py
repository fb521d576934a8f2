"""Staged rollouts (as hawkBit and AWS IoT Jobs do them): a release goes to a named canary group
first, then to growing shares of the fleet. A stage opens once enough traps of the one before run
the release; the rollout halts by itself when too many fail. Pause, resume and roll back are
operator actions.

Everything here is database state: each trap's desired release (`DeviceRelease`). The controller
(`controller.py`) publishes it as the trap's retained `cmd/model` and calls `advance` regularly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trapline.contracts import OTA_FAILURE_STAGES, version_key
from trapline.server.models import Device, DeviceGroup, DeviceRelease, Release, Rollout

ACTIVE_STATES = ("running", "paused", "halted")
GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RolloutError(ValueError):
    """The rollout cannot be started or changed like that; the message says why and what to do."""


@dataclass(frozen=True)
class RolloutPlan:
    canary_group: str | None = None
    percentages: Sequence[int] = (100,)
    max_failure_percent: float = 10.0  # of the traps told so far; the canary's failure halts at once
    success_percent: float = 100.0  # of a stage's traps running the release before the next opens
    spread_s: int = 0  # downloads spread over this many seconds (a delay per trap in its command)


@dataclass
class RollbackResult:
    going_back: dict[str, int] = field(default_factory=dict)  # device -> release it goes back to
    staying: list[str] = field(default_factory=list)  # no earlier release known: they keep theirs


def stage_labels(rollout: Rollout) -> list[str]:
    labels = [f"group {rollout.canary_group}"] if rollout.canary_group else []
    return labels + [f"{p}% of the fleet" for p in rollout.percentages]


def group_members(session: Session, name: str) -> list[str]:
    return sorted(session.scalars(select(DeviceGroup.device_id).where(DeviceGroup.name == name)))


def set_group(session: Session, name: str, device_ids: Sequence[str]) -> list[str]:
    """Make `name` hold exactly `device_ids` (all registered traps)."""
    known = set(session.scalars(select(Device.id).where(Device.id.in_(device_ids))))
    unknown = sorted(set(device_ids) - known)
    if unknown:
        raise RolloutError(f"unknown traps: {', '.join(unknown)}")
    for row in session.scalars(select(DeviceGroup).where(DeviceGroup.name == name)):
        session.delete(row)
    session.flush()
    for device_id in sorted(set(device_ids)):
        session.add(DeviceGroup(name=name, device_id=device_id))
    return sorted(set(device_ids))


def _fleet_order(session: Session, rollout: Rollout) -> list[str]:
    """The canary group first, then every other trap in an order fixed per rollout (hashed), so
    "10%" is a stable, arbitrary tenth of the fleet rather than the alphabetically first traps."""
    canary = group_members(session, rollout.canary_group) if rollout.canary_group else []
    others = [d for d in session.scalars(select(Device.id)) if d not in canary]
    others.sort(key=lambda d: hashlib.sha256(f"{rollout.id}:{d}".encode()).hexdigest())
    return canary + others


def stage_targets(session: Session, rollout: Rollout, stage: int) -> list[str]:
    """The traps a stage (and the stages before it) covers."""
    fleet = _fleet_order(session, rollout)
    canary = group_members(session, rollout.canary_group) if rollout.canary_group else []
    if rollout.canary_group and stage == 0:
        return canary
    percent = rollout.percentages[stage - (1 if rollout.canary_group else 0)]
    return fleet[: max(len(canary), math.ceil(percent * len(fleet) / 100))]


def start_rollout(
    session: Session, release_id: int, plan: RolloutPlan, created_by: str, now: datetime
) -> Rollout:
    release = session.get(Release, release_id)
    if release is None or release.archive_file is None:
        raise RolloutError(
            f"no downloadable release {release_id} (register it with `trapline server release add`)"
        )
    if plan.canary_group is not None and not group_members(session, plan.canary_group):
        raise RolloutError(f"the canary group {plan.canary_group!r} has no traps")
    percentages = list(plan.percentages)
    if not percentages and plan.canary_group is None:
        raise RolloutError("a rollout needs a canary group or at least one share of the fleet")
    if any(not 1 <= p <= 100 for p in percentages) or percentages != sorted(set(percentages)):
        raise RolloutError(f"shares of the fleet must grow, each 1-100 %: {percentages}")
    rollout = Rollout(
        release_id=release_id,
        state="running",
        canary_group=plan.canary_group,
        percentages=percentages,
        stage=0,
        max_failure_percent=plan.max_failure_percent,
        success_percent=plan.success_percent,
        spread_s=plan.spread_s,
        tolerated_failures=0,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    for other in session.scalars(
        select(Rollout).where(Rollout.state.in_(ACTIVE_STATES), Rollout.id != rollout.id)
    ):
        other.state, other.reason, other.updated_at = "cancelled", f"superseded by rollout {rollout.id}", now
    advance_rollout(session, rollout, now)
    return rollout


def _assign(session: Session, device_id: str, rollout: Rollout, release: Release, now: datetime) -> None:
    row = session.get(DeviceRelease, device_id)
    if row is None:
        row = DeviceRelease(device_id=device_id, published=False)
        session.add(row)
    if row.rollout_id == rollout.id:
        return
    # what to go back to: the release of the model it runs (not one it refused), else the one it
    # was told before
    device = session.get(Device, device_id)
    previous = None
    if device is not None and device.model_sha256:
        previous = session.scalar(
            select(Release.id).where(Release.model_sha256 == device.model_sha256).order_by(Release.id.desc())
        )
    if previous is None or previous == release.id:
        previous = row.desired_release_id if row.desired_release_id != release.id else row.previous_release_id
    row.previous_release_id = previous if previous != release.id else None
    row.desired_release_id = release.id
    row.rollout_id = rollout.id
    row.assigned_at = now
    row.published = False
    row.stage = row.reason = row.stage_at = None


def advance_rollout(session: Session, rollout: Rollout, now: datetime) -> list[str]:
    """Tell the current stage's traps, judge it, and open the next stage or halt. Returns events."""
    release = session.get(Release, rollout.release_id)
    if release is None:
        return []
    events: list[str] = []
    while rollout.state == "running":
        targets = stage_targets(session, rollout, rollout.stage)
        for device_id in targets:
            _assign(session, device_id, rollout, release, now)
        session.flush()
        rows = list(session.scalars(select(DeviceRelease).where(DeviceRelease.rollout_id == rollout.id)))
        # "installed" comes after the trap's health window (or at once from a trap that already
        # runs the release); a trap that has only switched can still go back
        succeeded = {r.device_id for r in rows if r.stage == "installed"}
        failed = [r for r in rows if r.stage in OTA_FAILURE_STAGES and r.device_id not in succeeded]
        counted = len(failed) - rollout.tolerated_failures  # an operator resumed knowing of those
        if rows and counted > 0 and counted * 100 / len(rows) > rollout.max_failure_percent:
            why = "; ".join(f"{r.device_id}: {r.stage} ({(r.reason or '')[:120]})" for r in failed[:3])
            rollout.state, rollout.updated_at = "halted", now
            limit = f"{rollout.max_failure_percent:g}%"
            rollout.reason = f"{len(failed)} of {len(rows)} traps failed, more than {limit}: {why}"[:500]
            events.append(f"rollout {rollout.id} halted: {rollout.reason}")
            break
        done = sum(1 for d in targets if d in succeeded)
        if not targets or done * 100 / len(targets) < rollout.success_percent:
            break
        if rollout.stage + 1 >= len(stage_labels(rollout)):
            rollout.state, rollout.updated_at, rollout.reason = "completed", now, None
            events.append(f"rollout {rollout.id} completed")
            break
        rollout.stage += 1
        rollout.updated_at = now
        events.append(
            f"rollout {rollout.id} opened stage {rollout.stage}: {stage_labels(rollout)[rollout.stage]}"
        )
    return events


def advance(session: Session, now: datetime) -> list[str]:
    events: list[str] = []
    for rollout in session.scalars(select(Rollout).where(Rollout.state == "running").order_by(Rollout.id)):
        events += advance_rollout(session, rollout, now)
    return events


def _get(session: Session, rollout_id: int) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise RolloutError(f"no rollout {rollout_id}")
    return rollout


def pause(session: Session, rollout_id: int, now: datetime) -> Rollout:
    """No more traps are told; those told already carry on."""
    rollout = _get(session, rollout_id)
    if rollout.state != "running":
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}, not running")
    rollout.state, rollout.updated_at = "paused", now
    return rollout


def resume(session: Session, rollout_id: int, now: datetime) -> Rollout:
    """Carry on after a pause, or after a halt once its cause is understood."""
    rollout = _get(session, rollout_id)
    if rollout.state not in ("paused", "halted"):
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}: only a paused or halted one resumes")
    if rollout.state == "halted":  # the failures that halted it are known now: judge new ones only
        rollout.tolerated_failures = (
            session.scalar(
                select(func.count())
                .select_from(DeviceRelease)
                .where(DeviceRelease.rollout_id == rollout.id, DeviceRelease.stage.in_(OTA_FAILURE_STAGES))
            )
            or 0
        )
    rollout.state, rollout.reason, rollout.updated_at = "running", None, now
    advance_rollout(session, rollout, now)
    return rollout


def rollback(session: Session, rollout_id: int, actor: str, now: datetime) -> RollbackResult:
    """Every trap this rollout told goes back to the release it was told before. Traps refuse an
    older version unless a release key granted it, so every older release needs its grant first."""
    rollout = _get(session, rollout_id)
    if rollout.state in ("rolled_back", "cancelled"):
        raise RolloutError(f"rollout {rollout_id} is {rollout.state}")
    release = session.get(Release, rollout.release_id)
    rows = list(session.scalars(select(DeviceRelease).where(DeviceRelease.rollout_id == rollout.id)))
    new = version_key(release.version or "") if release else None
    missing = {}
    for row in rows:
        earlier = session.get(Release, row.previous_release_id) if row.previous_release_id else None
        if earlier is None or earlier.rollback_grant is not None:
            continue
        device = session.get(Device, row.device_id)
        if device is not None and device.model_sha256 == earlier.model_sha256:
            continue  # it runs that model already (it never switched, or went back by itself)
        old = version_key(earlier.version or "")
        if new and old and old < new:
            missing[earlier.id] = earlier.version
    if missing:
        listed = ", ".join(f"release {i} (v{v})" for i, v in sorted(missing.items()))
        raise RolloutError(
            f"{listed}: no rollback grant, and traps refuse an older version without one. The release"
            " manager signs one with `trapline export rollback-grant --bundle <that bundle> --private-key"
            " <release key> --out grant.json`; add it with `trapline server release grant <id> grant.json`."
        )
    result = RollbackResult()
    for row in rows:
        if row.previous_release_id is None:
            result.staying.append(row.device_id)
            continue
        result.going_back[row.device_id] = row.previous_release_id
        row.desired_release_id, row.previous_release_id = row.previous_release_id, rollout.release_id
        row.rollout_id, row.assigned_at, row.published = None, now, False
        row.stage = row.reason = row.stage_at = None
    rollout.state, rollout.updated_at = "rolled_back", now
    rollout.reason = f"rolled back by {actor}: {len(result.going_back)} traps told to go back"
    return result
