"""Mosquitto's password file and ACL, kept in step with the device registry.

The files are rewritten from the database (atomically: Mosquitto never reads half a file) every
time a trap's credentials change, then Mosquitto is asked to reload them. A SIGHUP makes Mosquitto
re-read `password_file` and `acl_file` without dropping a single connection (tested with a real
broker: a connected trap keeps publishing through the reload). Under systemd the server cannot
signal the broker (another user); `systemd/trapline-mosquitto-reload.path` watches the password
file and reloads mosquitto.service instead.
"""

from __future__ import annotations

import grp
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.credentials import reveal
from trapline.files import atomic_write
from trapline.server.core.config import ServerSettings
from trapline.server.models import Device
from trapline.server.security import mosquitto_acl, mosquitto_password_line

log = logging.getLogger(__name__)

PASSWD, ACL = "passwd", "acl"
# Mosquitto reads the files as its own user after dropping root; it warns about (and future
# versions refuse) world-readable password files: 0640, group mosquitto
BROKER_GROUP = "mosquitto"


@dataclass(frozen=True)
class BrokerAuthFiles:
    passwd: Path
    acl: Path
    users: int


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _write(path: Path, text: str) -> None:
    atomic_write(path, text.encode(), 0o640)
    gid = _group_id(BROKER_GROUP)
    if gid is not None:
        try:
            os.chown(path, -1, gid)
        except OSError:  # not ours to give (a setgid folder does it), or the broker runs as us (tests)
            log.debug("cannot give %s to group %s", path, BROKER_GROUP)


def write_broker_auth(session: Session, settings: ServerSettings, folder: Path) -> BrokerAuthFiles:
    """Password file (the server's own user, then every active trap) and ACL, from the registry."""
    lines = [
        d.mqtt_password_line
        for d in session.scalars(select(Device).order_by(Device.id))
        if d.mqtt_password_line
    ]
    if settings.mqtt_username:
        password = reveal(settings.mqtt_password) or ""
        lines.insert(0, mosquitto_password_line(settings.mqtt_username, password))
    folder.mkdir(parents=True, exist_ok=True)
    passwd, acl = folder / PASSWD, folder / ACL
    server_users = [settings.mqtt_username] if settings.mqtt_username else []
    # the ACL first: a new user must never be able to log in before its topics are fenced
    _write(acl, mosquitto_acl(settings.mqtt_prefix, server_users))
    _write(passwd, "\n".join(lines) + "\n")
    return BrokerAuthFiles(passwd, acl, len(lines))


def reload_broker(pid_file: Path) -> bool:
    """SIGHUP to the broker named in `pid_file`; False (logged) when that is not possible."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        log.error("could not ask mosquitto (%s) to reload its credentials: %s", pid_file, exc)
        return False
    log.info("asked mosquitto (pid %d) to reload its password file and ACL", pid)
    return True


def sync_broker(session: Session, settings: ServerSettings) -> BrokerAuthFiles | None:
    """After a credential change: rewrite the files and reload, when the server manages them."""
    if settings.mosquitto_auth_dir is None:
        return None
    files = write_broker_auth(session, settings, settings.mosquitto_auth_dir)
    if settings.mosquitto_pid_file is not None:
        reload_broker(settings.mosquitto_pid_file)
    return files
