"""FastAPI dependencies: database session, settings, and who is asking (token and role).

People call the API with a bearer token, or use the dashboard with a session cookie: a random
session id (stored hashed, expiring, deleted at logout), never the API token itself. Traps upload
with their own token, accepted only where it cannot be read on the way (https or loopback).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.server.core.config import ServerSettings
from trapline.server.models import ApiToken, Device, WebSession
from trapline.server.security import hash_token

log = logging.getLogger(__name__)

COOKIE = "trapline_session"


def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def principal_or_none(request: Request, session: Session) -> Principal | None:
    """Who the bearer token or the dashboard's session cookie belongs to, if anyone."""
    token = _bearer(request)
    if token is not None:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    elif (session_id := request.cookies.get(COOKIE)) is not None:
        row = session.scalar(
            select(ApiToken)
            .join(WebSession, WebSession.token_id == ApiToken.id)
            .where(WebSession.id_hash == hash_token(session_id), WebSession.expires_at > datetime.now(UTC))
        )
    else:
        row = None
    return Principal(row.name, row.role) if row is not None else None


def current_user(request: Request, session: SessionDep) -> Principal:
    if (user := principal_or_none(request, session)) is not None:
        return user
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED, "a valid API token is needed", {"WWW-Authenticate": "Bearer"}
    )


def require_admin(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role needed")
    return user


def private_transport(request: Request, settings: ServerSettings) -> bool:
    """True when a secret sent with `request` could not be read on the way: https (directly or
    behind a proxy that says so), a client on this machine, or plain http allowed by setting."""
    if request.url.scheme == "https" or settings.allow_http_uploads:
        return True
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def current_device(request: Request, session: SessionDep, settings: SettingsDep) -> Device:
    """The trap whose upload token came with the request (headers only: no body is read)."""
    token = _bearer(request)
    device = session.scalar(select(Device).where(Device.token_hash == hash_token(token))) if token else None
    if device is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid device upload token is needed")
    if not private_transport(request, settings):
        client = request.client.host if request.client else "?"
        log.warning(
            "trap %s sent its upload token over plain http from %s: refused. The token must be "
            "considered read by others: issue a new one (trapline server device add %s) and use https",
            device.id,
            client,
            device.id,
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, "upload tokens are accepted only over https")
    return device


UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
DeviceDep = Annotated[Device, Depends(current_device)]
