"""What an operator does once per trap, person or model, in one call each: the services behind
`trapline server token create` and `model add`, and what `make demo` sets up in its own process
(a trap with credentials, a release, the broker's files)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import is_valid_device_id
from trapline.keyring import Keyring
from trapline.server.broker_auth import write_broker_auth as write_broker_files
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.model_registry import register_bundle
from trapline.server.models import ApiToken, Device
from trapline.server.ota.releases import register_release as register_release_row
from trapline.server.security import hash_token, mosquitto_password_line, new_token


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    mqtt_password: str
    upload_token: str


def register_device(
    sessions: sessionmaker[Session], device_id: str, name: str | None = None
) -> DeviceCredentials:
    """Register a trap (or give it new credentials); ValueError for an id that is not one."""
    # the id becomes a topic level, a Mosquitto password-file line and part of every message id:
    # a ':' or a newline would corrupt the password file
    if not is_valid_device_id(device_id):
        raise ValueError(
            f"invalid device id {device_id!r}: 1-64 letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    with transaction(sessions) as session:
        device = session.get(Device, device_id) or Device(id=device_id, state="unknown")
        device.name = name or device.name
        session.add(device)
        return give_credentials(device)


def give_credentials(device: Device) -> DeviceCredentials:
    """New MQTT password and upload token for a trap set up by hand (replacing any it had)."""
    upload_token, mqtt_password = new_token(), new_token()
    device.token_hash = hash_token(upload_token)
    device.mqtt_password_line = mosquitto_password_line(device.id, mqtt_password)
    device.last_seen_at = device.last_seen_at or datetime.now(UTC)
    return DeviceCredentials(device.id, mqtt_password, upload_token)


def create_api_token(sessions: sessionmaker[Session], name: str, role: str) -> str:
    token = new_token()
    with transaction(sessions) as session:
        session.add(
            ApiToken(name=name, token_hash=hash_token(token), role=role, created_at=datetime.now(UTC))
        )
    return token


def register_model(sessions: sessionmaker[Session], bundle: Path, trust: Keyring | Path) -> tuple[str, str]:
    """Verify a signed bundle and record its model version and metrics; (name, version)."""
    with transaction(sessions) as session:
        row = register_bundle(session, bundle, trust)
        return row.name, row.version


def register_release(sessions: sessionmaker[Session], settings: ServerSettings, bundle: Path) -> int:
    """Offer a signed bundle to the traps as a release (what `release add` does); its id."""
    with transaction(sessions) as session:
        return register_release_row(session, settings, bundle, None, None).id


def write_broker_auth(sessions: sessionmaker[Session], settings: ServerSettings, out: Path) -> int:
    """Mosquitto's password file and ACL in `out`; returns how many users the password file has."""
    with sessions() as session:
        return write_broker_files(session, settings, out).users
