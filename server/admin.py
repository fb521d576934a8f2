"""What an operator does once per trap, person or model: the service behind `trapline server
device add`, `token create`, `model add` and `mqtt-auth` (also used by `make demo`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import is_valid_device_id
from trapline.credentials import reveal
from trapline.keyring import Keyring
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.model_registry import register_bundle
from trapline.server.models import ApiToken, Device
from trapline.server.security import hash_token, mosquitto_acl, mosquitto_password_line, new_token


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
    upload_token, mqtt_password = new_token(), new_token()
    with transaction(sessions) as session:
        device = session.get(Device, device_id) or Device(id=device_id, state="unknown")
        device.name = name or device.name
        device.token_hash = hash_token(upload_token)
        device.mqtt_password_line = mosquitto_password_line(device_id, mqtt_password)
        device.last_seen_at = device.last_seen_at or datetime.now(UTC)
        session.add(device)
    return DeviceCredentials(device_id, mqtt_password, upload_token)


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


def write_broker_auth(sessions: sessionmaker[Session], settings: ServerSettings, out: Path) -> int:
    """Mosquitto's password file and ACL in `out`; returns how many users the password file has."""
    with sessions() as session:
        lines = [d.mqtt_password_line for d in session.scalars(select(Device)) if d.mqtt_password_line]
    if settings.mqtt_username:
        lines.insert(0, mosquitto_password_line(settings.mqtt_username, reveal(settings.mqtt_password) or ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "passwd").write_text("\n".join(lines) + "\n")
    (out / "passwd").chmod(0o600)
    server_users = [settings.mqtt_username] if settings.mqtt_username else []
    (out / "acl").write_text(mosquitto_acl(settings.mqtt_prefix, server_users))
    return len(lines)
