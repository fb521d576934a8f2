"""Traps and their health: online/offline from the Last Will, stale when silent too long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from trapline.server.api.deps import SessionDep, SettingsDep, UserDep
from trapline.server.api.schemas import DeviceHealth
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
