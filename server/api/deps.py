"""FastAPI dependencies: database session, settings, and who is asking (token and role)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.server.core.config import ServerSettings
from trapline.server.models import ApiToken, Device
from trapline.server.security import hash_token

COOKIE = "trapline_token"


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
        return header[7:].strip()
    return request.cookies.get(COOKIE)


def principal_or_none(request: Request, session: Session) -> Principal | None:
    """Who the bearer token or the dashboard cookie belongs to, if anyone."""
    token = _bearer(request)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token))) if token else None
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


def current_device(request: Request, session: SessionDep) -> Device:
    token = _bearer(request)
    device = session.scalar(select(Device).where(Device.token_hash == hash_token(token))) if token else None
    if device is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid device upload token is needed")
    return device


UserDep = Annotated[Principal, Depends(current_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
DeviceDep = Annotated[Device, Depends(current_device)]
