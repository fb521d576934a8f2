"""Traps and their health: online/offline from the Last Will, stale when silent too long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from trapline.contracts import DEVICE_ID_PATTERN
from trapline.enrolment import SITE_ID_PATTERN
from trapline.server.api.deps import AdminDep, SessionDep, SettingsDep, UserDep
from trapline.server.api.schemas import DeviceHealth
from trapline.server.broker_auth import sync_broker
from trapline.server.fleet import RegistryError, decommission, issue_enrolment_token
from trapline.server.models import Device

router = APIRouter(prefix="/devices", tags=["devices"])


def health_of(device: Device, stale_after_s: float, now: datetime) -> DeviceHealth:
    beat = device.heartbeat or {}
    heard = max((t for t in (device.last_seen_at, device.last_heartbeat_at) if t), default=None)
    health = device.state
    if device.state == "online" and (heard is None or now - heard > timedelta(seconds=stale_after_s)):
        health = "stale"  # the broker thinks it is connected, but it has said nothing for too long
    return DeviceHealth(
        id=device.id,
        name=device.name,
        state=device.state,
        health=health,
        last_seen_at=device.last_seen_at,
        last_heartbeat_at=device.last_heartbeat_at,
        agent_version=device.agent_version,
        model_name=device.model_name,
        model_version=device.model_version,
        spool_depth=beat.get("spool_depth"),
        dropped=beat.get("dropped"),
        frames_processed=beat.get("frames_processed"),
        disk_free_bytes=beat.get("disk_free_bytes"),
        cpu_temp_c=beat.get("cpu_temp_c"),
        last_error=beat.get("last_error"),
        clock_suspect=device.clock_suspect,
        view_state=(beat.get("view") or {}).get("state"),
    )


def fleet(session: SessionDep, stale_after_s: float) -> list[DeviceHealth]:
    now = datetime.now(UTC)
    return [health_of(d, stale_after_s, now) for d in session.scalars(select(Device).order_by(Device.id))]


@router.get("", response_model=list[DeviceHealth])
def list_devices(session: SessionDep, settings: SettingsDep, _user: UserDep) -> list[DeviceHealth]:
    return fleet(session, settings.stale_after_s)


@router.get("/{device_id}", response_model=DeviceHealth)
def get_device(device_id: str, session: SessionDep, settings: SettingsDep, _user: UserDep) -> DeviceHealth:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id!r}")
    return health_of(device, settings.stale_after_s, datetime.now(UTC))


# --- the registry (admins) -------------------------------------------------------------------
class DevicesIn(BaseModel):
    """One trap or a batch: each gets a one-time enrolment token for `trapline provision`."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=500)
    site: str | None = Field(None, pattern=SITE_ID_PATTERN, description="where they will stand")

    def checked_ids(self) -> list[str]:
        bad = [i for i in self.ids if not DEVICE_ID_PATTERN.match(i)]
        if bad or len(set(self.ids)) != len(self.ids):
            raise HTTPException(422, f"invalid or repeated device ids: {bad or 'repeated'}")
        return self.ids


class EnrolmentTokenOut(BaseModel):
    device_id: str
    enrolment_token: str = Field(description="shown once: give it to the technician")
    expires_at: datetime


@router.post("", response_model=list[EnrolmentTokenOut], status_code=201)
def register_devices(
    body: DevicesIn, session: SessionDep, settings: SettingsDep, _admin: AdminDep
) -> list[EnrolmentTokenOut]:
    try:
        issued = [issue_enrolment_token(session, settings, i, body.site) for i in body.checked_ids()]
    except RegistryError as exc:
        session.rollback()
        raise HTTPException(exc.status, str(exc)) from exc
    session.commit()
    return [
        EnrolmentTokenOut(device_id=t.device_id, enrolment_token=t.token, expires_at=t.expires_at)
        for t in issued
    ]


@router.post("/{device_id}/enrolment-token", response_model=EnrolmentTokenOut)
def new_enrolment_token(
    device_id: str, session: SessionDep, settings: SettingsDep, _admin: AdminDep
) -> EnrolmentTokenOut:
    """A fresh token for a registered trap (lost token, expired, or re-provisioning)."""
    if session.get(Device, device_id) is None:
        raise HTTPException(404, f"no device {device_id!r}")
    issued = issue_enrolment_token(session, settings, device_id)
    session.commit()
    return EnrolmentTokenOut(device_id=device_id, enrolment_token=issued.token, expires_at=issued.expires_at)


@router.post("/{device_id}/decommission", response_model=DeviceHealth)
def decommission_device(
    device_id: str, session: SessionDep, settings: SettingsDep, _admin: AdminDep
) -> DeviceHealth:
    """End the trap's deployment and revoke its credentials; its data stays."""
    try:
        device = decommission(session, settings, device_id)
    except RegistryError as exc:
        session.rollback()
        raise HTTPException(exc.status, str(exc)) from exc
    session.commit()
    sync_broker(session, settings)
    return health_of(device, settings.stale_after_s, datetime.now(UTC))
