"""Over-the-air updates: release downloads (with Range, for traps on links that drop), rollback
grants, device groups, staged rollouts (start, pause, resume, roll back), and each trap's current,
desired and previous model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.contracts import MAX_DOWNLOAD_DELAY_S, OTA_FAILURE_STAGES, RollbackGrant
from trapline.server.api.deps import AdminDep, SessionDep, SettingsDep, UserDep, principal_or_none
from trapline.server.api.routes.models import ReleaseOut, release_out
from trapline.server.models import Device, DeviceGroup, DeviceRelease, Release, Rollout
from trapline.server.ota.releases import ReleaseError, add_rollback_grant, archive_path
from trapline.server.ota.rollouts import (
    GROUP_NAME_PATTERN,
    RolloutError,
    RolloutPlan,
    pause,
    resume,
    rollback,
    set_group,
    stage_labels,
    start_rollout,
)
from trapline.server.security import hash_token

router = APIRouter(tags=["ota"])


def downloader(request: Request, session: SessionDep) -> str:
    """A trap (its upload token) or a logged-in user may download a release."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token:
        device = session.scalar(select(Device.id).where(Device.token_hash == hash_token(token)))
        if device is not None:
            return f"device {device}"
    user = principal_or_none(request, session)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a device or user token is needed")
    return user.name


@router.get("/releases/{release_id}/bundle", response_class=FileResponse)
def download_bundle(
    release_id: int, session: SessionDep, settings: SettingsDep, _who: Annotated[str, Depends(downloader)]
) -> FileResponse:
    """The release's signed bundle (.tar.gz); `Range: bytes=N-` resumes a cut download."""
    release = session.get(Release, release_id)
    path = archive_path(settings, release) if release is not None else None
    if release is None or path is None or not path.is_file():
        raise HTTPException(404, f"no downloadable release {release_id}")
    return FileResponse(path, media_type="application/gzip", filename=release.archive_file)


@router.post("/releases/{release_id}/rollback-grant", response_model=ReleaseOut)
def add_grant(
    release_id: int, grant: RollbackGrant, session: SessionDep, settings: SettingsDep, _admin: AdminDep
) -> ReleaseOut:
    """Store a release manager's signed permission for traps to go back to this release."""
    try:
        release = add_rollback_grant(session, settings, release_id, grant)
    except ReleaseError as exc:
        raise HTTPException(400, str(exc)) from exc
    session.commit()
    return release_out(release)


# --- groups -------------------------------------------------------------------------------------
class GroupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[str] = Field(description="the traps in the group (replaces its members)")


@router.get("/groups", response_model=dict[str, list[str]])
def list_groups(session: SessionDep, _user: UserDep) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for row in session.scalars(select(DeviceGroup).order_by(DeviceGroup.name, DeviceGroup.device_id)):
        groups.setdefault(row.name, []).append(row.device_id)
    return groups


@router.put("/groups/{name}", response_model=list[str])
def put_group(
    name: Annotated[str, Field(pattern=GROUP_NAME_PATTERN)],
    body: GroupIn,
    session: SessionDep,
    _admin: AdminDep,
) -> list[str]:
    try:
        members = set_group(session, name, body.devices)
    except RolloutError as exc:
        raise HTTPException(400, str(exc)) from exc
    session.commit()
    return members


# --- rollouts -----------------------------------------------------------------------------------
class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: int
    canary_group: str | None = Field(None, pattern=GROUP_NAME_PATTERN, description="told first, alone")
    percentages: list[int] = Field([100], description="then these shares of the fleet, one stage each")
    max_failure_percent: float = Field(
        10.0, ge=0, le=100, description="halt when more than this share of the traps told so far fail"
    )
    success_percent: float = Field(
        100.0, gt=0, le=100, description="share of a stage that must run the release before the next"
    )
    spread_s: int = Field(0, ge=0, le=MAX_DOWNLOAD_DELAY_S, description="spread downloads over this long")


class RolloutOut(BaseModel):
    id: int
    release_id: int
    version: str | None
    state: str
    stage: int
    stages: list[str]
    canary_group: str | None
    percentages: list[int]
    max_failure_percent: float
    success_percent: float
    spread_s: int
    reason: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    told: int
    installed: int
    failed: int


def rollout_out(session: Session, rollout: Rollout) -> RolloutOut:
    release = session.get(Release, rollout.release_id)
    rows = list(session.scalars(select(DeviceRelease).where(DeviceRelease.rollout_id == rollout.id)))
    return RolloutOut(
        id=rollout.id,
        release_id=rollout.release_id,
        version=release.version if release else None,
        state=rollout.state,
        stage=rollout.stage,
        stages=stage_labels(rollout),
        canary_group=rollout.canary_group,
        percentages=list(rollout.percentages),
        max_failure_percent=rollout.max_failure_percent,
        success_percent=rollout.success_percent,
        spread_s=rollout.spread_s,
        reason=rollout.reason,
        created_by=rollout.created_by,
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
        told=len(rows),
        installed=sum(1 for r in rows if r.stage == "installed"),
        failed=sum(1 for r in rows if r.stage in OTA_FAILURE_STAGES),
    )


def _conflict(exc: RolloutError) -> HTTPException:
    return HTTPException(409, str(exc))


@router.post("/rollouts", response_model=RolloutOut, status_code=201)
def create_rollout(body: RolloutIn, session: SessionDep, admin: AdminDep) -> RolloutOut:
    """Start sending a release out: the canary group first, then the shares of the fleet."""
    plan = RolloutPlan(
        body.canary_group, body.percentages, body.max_failure_percent, body.success_percent, body.spread_s
    )
    try:
        rollout = start_rollout(session, body.release_id, plan, admin.name, datetime.now(UTC))
    except RolloutError as exc:
        raise _conflict(exc) from exc
    session.commit()
    return rollout_out(session, rollout)


@router.get("/rollouts", response_model=list[RolloutOut])
def list_rollouts(session: SessionDep, _user: UserDep) -> list[RolloutOut]:
    return [rollout_out(session, r) for r in session.scalars(select(Rollout).order_by(Rollout.id.desc()))]


@router.get("/rollouts/{rollout_id}", response_model=RolloutOut)
def get_rollout(rollout_id: int, session: SessionDep, _user: UserDep) -> RolloutOut:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise HTTPException(404, f"no rollout {rollout_id}")
    return rollout_out(session, rollout)


@router.post("/rollouts/{rollout_id}/pause", response_model=RolloutOut)
def pause_rollout(rollout_id: int, session: SessionDep, _admin: AdminDep) -> RolloutOut:
    try:
        rollout = pause(session, rollout_id, datetime.now(UTC))
    except RolloutError as exc:
        raise _conflict(exc) from exc
    session.commit()
    return rollout_out(session, rollout)


@router.post("/rollouts/{rollout_id}/resume", response_model=RolloutOut)
def resume_rollout(rollout_id: int, session: SessionDep, _admin: AdminDep) -> RolloutOut:
    try:
        rollout = resume(session, rollout_id, datetime.now(UTC))
    except RolloutError as exc:
        raise _conflict(exc) from exc
    session.commit()
    return rollout_out(session, rollout)


class RollbackOut(BaseModel):
    rollout: RolloutOut
    going_back: dict[str, int] = Field(description="trap -> the release it goes back to")
    staying: list[str] = Field(description="traps with no earlier release on record: they keep theirs")


@router.post("/rollouts/{rollout_id}/rollback", response_model=RollbackOut)
def rollback_rollout(rollout_id: int, session: SessionDep, admin: AdminDep) -> RollbackOut:
    """Every trap this rollout told goes back to the release it had before."""
    try:
        result = rollback(session, rollout_id, admin.name, datetime.now(UTC))
    except RolloutError as exc:
        raise _conflict(exc) from exc
    session.commit()
    rollout = session.get(Rollout, rollout_id)
    assert rollout is not None  # noqa: S101 - rollback() found it in this session
    return RollbackOut(
        rollout=rollout_out(session, rollout), going_back=result.going_back, staying=result.staying
    )


# --- what each trap runs ------------------------------------------------------------------------
class ModelName(BaseModel):
    name: str | None
    version: str | None
    release_id: int | None = None


class DeviceModelsOut(BaseModel):
    device_id: str
    current: ModelName | None
    desired: ModelName | None
    previous: ModelName | None
    stage: str | None
    reason: str | None
    stage_at: datetime | None
    rollout_id: int | None
    published: bool


@router.get("/fleet/models", response_model=list[DeviceModelsOut])
def fleet_models(session: SessionDep, _user: UserDep) -> list[DeviceModelsOut]:
    """Per trap: the model it runs (its status), the release it should run, and the one before."""
    return device_models(session)


def device_models(session: Session) -> list[DeviceModelsOut]:
    targets = {r.device_id: r for r in session.scalars(select(DeviceRelease))}
    releases = {r.id: r for r in session.scalars(select(Release))}
    out = []
    for device in session.scalars(select(Device).order_by(Device.id)):
        target = targets.get(device.id)
        desired = releases.get(target.desired_release_id) if target and target.desired_release_id else None
        previous: ModelName | None = None
        earlier = releases.get(target.previous_release_id) if target and target.previous_release_id else None
        if target and target.previous_model_version:  # what the trap reported it switched from
            previous = ModelName(name=target.previous_model_name, version=target.previous_model_version)
        elif earlier is not None:
            previous = ModelName(name=earlier.name, version=earlier.version, release_id=earlier.id)
        out.append(
            DeviceModelsOut(
                device_id=device.id,
                current=ModelName(name=device.model_name, version=device.model_version)
                if device.model_version
                else None,
                desired=ModelName(name=desired.name, version=desired.version, release_id=desired.id)
                if desired
                else None,
                previous=previous,
                stage=target.stage if target else None,
                reason=target.reason if target else None,
                stage_at=target.stage_at if target else None,
                rollout_id=target.rollout_id if target else None,
                published=target.published if target else False,
            )
        )
    return out
