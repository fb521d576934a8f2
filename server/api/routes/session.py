"""Dashboard login: an API token buys an expiring session; logging out revokes it.

The cookie holds a random session id (HttpOnly, SameSite=Strict, Secure over https); the database
keeps only its hash and when it expires. The API token never leaves the login form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response
from sqlalchemy import delete, select

from trapline.server.api.deps import COOKIE, SessionDep, SettingsDep, UserDep
from trapline.server.models import ApiToken, WebSession
from trapline.server.security import hash_token, new_token

router = APIRouter(prefix="/session", tags=["session"])


@router.post("")
def login(
    token: Annotated[str, Form(max_length=200)],
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> dict[str, str]:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise HTTPException(401, "unknown token")
    session_id = new_token()
    now = datetime.now(UTC)
    lifetime = timedelta(hours=settings.session_hours)
    session.add(
        WebSession(id_hash=hash_token(session_id), token_id=row.id, created_at=now, expires_at=now + lifetime)
    )
    session.commit()
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return {"name": row.name, "role": row.role}


@router.get("")
def whoami(user: UserDep) -> dict[str, str]:
    return {"name": user.name, "role": user.role}


@router.delete("")
def logout(request: Request, response: Response, session: SessionDep) -> dict[str, str]:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        session.execute(delete(WebSession).where(WebSession.id_hash == hash_token(session_id)))
        session.commit()
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return {"state": "logged out"}
