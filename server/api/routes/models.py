"""Model versions with their evaluation metrics, and releases."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from trapline.server.api.deps import SessionDep, UserDep
from trapline.server.api.schemas import ModelOut
from trapline.server.models import ModelVersion, Release

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelOut])
def list_models(session: SessionDep, _user: UserDep) -> list[ModelOut]:
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc()))
    return [ModelOut.model_validate(r, from_attributes=True) for r in rows]


class ReleaseOut(BaseModel):
    id: int
    model_id: int
    bundle_url: str
    bundle_sha256: str
    created_at: datetime
    name: str | None = None
    version: str | None = None
    size_bytes: int | None = None
    model_sha256: str | None = None
    key_id: str | None = None
    runtime: str | None = None
    min_agent_version: str | None = None
    rollback_grant: bool = False  # a release key allows traps to go back to it


def release_out(release: Release) -> ReleaseOut:
    fields = {name: getattr(release, name) for name in ReleaseOut.model_fields if name != "rollback_grant"}
    return ReleaseOut(**fields, rollback_grant=release.rollback_grant is not None)


releases_router = APIRouter(prefix="/releases", tags=["models"])


@releases_router.get("", response_model=list[ReleaseOut])
def list_releases(session: SessionDep, _user: UserDep) -> list[ReleaseOut]:
    rows = session.scalars(select(Release).order_by(Release.created_at.desc()))
    return [release_out(r) for r in rows]
