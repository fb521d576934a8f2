"""Log in with an API token (the dashboard keeps it in an HttpOnly cookie)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Response
from sqlalchemy import select

from trapline.server.api.deps import COOKIE, SessionDep, SettingsDep, UserDep
from trapline.server.models import ApiToken
from trapline.server.security import hash_token

router = APIRouter(prefix="/session", tags=["session"])


@router.post("")
def login(
    token: Annotated[str, Form()], response: Response, session: SessionDep, settings: SettingsDep
) -> dict[str, str]:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise HTTPException(401, "unknown token")
    response.set_cookie(
        COOKIE, token, max_age=int(settings.session_hours * 3600), httponly=True, samesite="strict"
    )
    return {"name": row.name, "role": row.role}


@router.get("")
def whoami(user: UserDep) -> dict[str, str]:
    return {"name": user.name, "role": user.role}


@router.delete("")
def logout(response: Response) -> dict[str, str]:
    response.delete_cookie(COOKIE)
    return {"state": "logged out"}
