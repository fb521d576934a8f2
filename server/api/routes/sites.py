"""Sites: places traps stand at, and the rules traps there apply (privacy blur of people)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from trapline.enrolment import SITE_ID_PATTERN
from trapline.server.api.deps import AdminDep, SessionDep, UserDep
from trapline.server.fleet import add_site
from trapline.server.models import Site

router = APIRouter(prefix="/sites", tags=["fleet"])


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=SITE_ID_PATTERN)
    name: str | None = Field(None, max_length=200)
    blur_people: bool = Field(False, description="traps here blur people before any picture is uploaded")


class SiteOut(SiteIn):
    created_at: datetime


@router.put("", response_model=SiteOut)
def put_site(body: SiteIn, session: SessionDep, _admin: AdminDep) -> SiteOut:
    site = add_site(session, body.id, body.name, body.blur_people)
    session.commit()
    return SiteOut.model_validate(site, from_attributes=True)


@router.get("", response_model=list[SiteOut])
def list_sites(session: SessionDep, _user: UserDep) -> list[SiteOut]:
    return [
        SiteOut.model_validate(s, from_attributes=True)
        for s in session.scalars(select(Site).order_by(Site.id))
    ]
