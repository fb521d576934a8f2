"""The device registry: register traps, enrol them with a one-time token, record where they
stand, take them out of service. Used by the API routes and the CLI alike (no FastAPI here).

Credentials are issued when a trap enrols, not when it is registered: the server keeps only hashes
(the upload token's SHA-256, the MQTT password's PBKDF2 line), so the plain values exist once, in
the enrolment answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.contracts import is_valid_device_id
from trapline.enrolment import (
    DeploymentReport,
    EnrolmentRequest,
    EnrolmentResponse,
    MqttAccess,
    SiteSettings,
    UploadAccess,
)
from trapline.keyring import public_pem
from trapline.server.core.config import ServerSettings
from trapline.server.models import Deployment, Device, DeviceEnrolment, Site
from trapline.server.ota.key_rotations import fleet_keyring
from trapline.server.security import hash_token, mosquitto_password_line, new_token

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """A request the registry refuses; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IssuedToken:
    device_id: str
    token: str
    expires_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _site(session: Session, site_id: str | None) -> Site | None:
    if site_id is None:
        return None
    site = session.get(Site, site_id)
    if site is None:
        raise RegistryError(f"no site {site_id!r}: an admin creates it first (trapline server site add)", 404)
    return site


def add_site(session: Session, site_id: str, name: str | None, blur_people: bool) -> Site:
    """Create a site, or change its name and privacy rule."""
    site = session.get(Site, site_id) or Site(id=site_id, created_at=_now())
    site.name = name if name is not None else site.name
    site.blur_people = blur_people
    session.add(site)
    return site


def issue_enrolment_token(
    session: Session, settings: ServerSettings, device_id: str, site_id: str | None = None
) -> IssuedToken:
    """Register `device_id` (or re-register it) and give it a fresh one-time enrolment token.

    An earlier unused token stops working. Re-enrolling an enrolled trap issues new credentials
    when the token is used (the old ones stop working then)."""
    if not is_valid_device_id(device_id):
        raise RegistryError(f"invalid device id {device_id!r}: letters, digits, '_', '.', '-'")
    _site(session, site_id)
    device = session.get(Device, device_id)
    if device is None:
        device = Device(id=device_id, state="unknown")
        session.add(device)
    enrolment = session.get(DeviceEnrolment, device_id)
    if enrolment is None:
        enrolment = DeviceEnrolment(device_id=device_id, created_at=_now())
        session.add(enrolment)
    token = new_token()
    enrolment.token_hash = hash_token(token)
    enrolment.token_expires_at = _now() + timedelta(hours=settings.enrolment_token_hours)
    enrolment.site_id = site_id if site_id is not None else enrolment.site_id
    enrolment.decommissioned_at = None
    session.flush()
    return IssuedToken(device_id, token, enrolment.token_expires_at)


def _keyring_pems(session: Session, settings: ServerSettings) -> dict[str, str]:
    # the keys the fleet trusts now (key rotation included): a new trap starts where the others are
    keyring = fleet_keyring(session, settings)
    return {identity: public_pem(key).decode() for identity, key in keyring.keys.items()}


def enrol(
    session: Session, settings: ServerSettings, request: EnrolmentRequest, base_url: str
) -> EnrolmentResponse:
    """Exchange a valid, unexpired, unused token for the trap's credentials (once).

    The caller commits, then calls `sync_broker` (after the commit, so two enrolments at once
    cannot write a password file that misses one of them) before handing out the answer."""
    token_hash = hash_token(request.token.get_secret_value())
    enrolment = session.scalar(select(DeviceEnrolment).where(DeviceEnrolment.token_hash == token_hash))
    # one answer for every bad token: an unknown, used or expired one looks the same from outside
    if (
        enrolment is None
        or enrolment.device_id != request.device_id
        or enrolment.token_expires_at is None
        or enrolment.token_expires_at < _now()
    ):
        raise RegistryError("enrolment token is not valid for this device (unknown, used or expired)", 403)
    site = _site(session, request.site or enrolment.site_id)
    device = session.get(Device, request.device_id)
    if device is None:  # registered with the token, so only a deleted row gets here
        raise RegistryError(f"no device {request.device_id!r}", 404)
    mqtt_password, upload_token = new_token(), new_token()
    device.token_hash = hash_token(upload_token)
    device.mqtt_password_line = mosquitto_password_line(device.id, mqtt_password)
    enrolment.token_hash = None  # used: never again
    enrolment.token_expires_at = None
    enrolment.enrolled_at = _now()
    enrolment.site_id = site.id if site else None
    session.flush()
    ca_pem = settings.trap_mqtt_ca_file.read_text() if settings.trap_mqtt_ca_file else None
    log.info("device %s enrolled (site %s)", device.id, site.id if site else "-")
    return EnrolmentResponse(
        device_id=device.id,
        issued_at=_now(),
        mqtt=MqttAccess(
            host=settings.trap_mqtt_host or settings.mqtt_host,
            port=settings.trap_mqtt_port or settings.mqtt_port,
            tls=settings.trap_mqtt_tls,
            ca_pem=ca_pem,
            prefix=settings.mqtt_prefix,
            username=device.id,
            password=mqtt_password,  # type: ignore[arg-type]  # pydantic makes it a SecretStr
        ),
        upload=UploadAccess(
            url=(settings.public_url or base_url).rstrip("/"),
            token=upload_token,  # type: ignore[arg-type]
        ),
        keyring=_keyring_pems(session, settings),
        site=SiteSettings(id=site.id, name=site.name, blur_people=site.blur_people) if site else None,
    )


def record_deployment(session: Session, device: Device, report: DeploymentReport) -> Deployment:
    """Open a deployment period for `device` (idempotent: the same start twice is one row).

    A still open earlier period ends where the new one starts: a trap stands in one place at a
    time."""
    if report.device_id != device.id:
        raise RegistryError("a trap reports only its own deployment", 403)
    site = _site(session, report.site)
    existing = session.scalar(
        select(Deployment).where(Deployment.device_id == device.id, Deployment.start == report.started_at)
    )
    deployment = existing or Deployment(device_id=device.id, start=report.started_at)
    if existing is None:
        for open_period in session.scalars(
            select(Deployment).where(
                Deployment.device_id == device.id,
                Deployment.end.is_(None),
                Deployment.start < report.started_at,
            )
        ):
            open_period.end = report.started_at
    deployment.site_id = site.id if site else None
    deployment.location_name = report.location_name or (site.name if site else None)
    deployment.latitude = report.latitude
    deployment.longitude = report.longitude
    deployment.camera_height_m = report.camera_height_m
    deployment.camera_heading_deg = report.camera_heading_deg
    deployment.camera_tilt_deg = report.camera_tilt_deg
    deployment.reference_photo_sha256 = report.reference_photo_sha256
    deployment.setup_by = report.setup_by
    deployment.comments = report.comments
    session.add(deployment)
    session.flush()
    return deployment


def decommission(session: Session, settings: ServerSettings, device_id: str) -> Device:
    """Take a trap out of service: its deployment ends now, its credentials stop working (the
    caller commits, then `sync_broker` reloads the broker without it). Its data stays."""
    device = session.get(Device, device_id)
    if device is None:
        raise RegistryError(f"no device {device_id!r}", 404)
    now = _now()
    for open_period in session.scalars(
        select(Deployment).where(Deployment.device_id == device_id, Deployment.end.is_(None))
    ):
        open_period.end = max(now, open_period.start)
    device.token_hash = None
    device.mqtt_password_line = None
    enrolment = session.get(DeviceEnrolment, device_id) or DeviceEnrolment(
        device_id=device_id, created_at=now
    )
    enrolment.token_hash = None
    enrolment.token_expires_at = None
    enrolment.decommissioned_at = now
    session.add(enrolment)
    session.flush()
    log.info("device %s decommissioned", device_id)
    return device
