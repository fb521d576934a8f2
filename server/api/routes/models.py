"""Model versions with their evaluation metrics, and releases."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from server.api.deps import SessionDep, UserDep
from server.api.schemas import ModelOut
from server.models import ModelVersion

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelOut])
def list_models(session: SessionDep, _user: UserDep) -> list[ModelOut]:
    rows = session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc()))
    return [ModelOut.model_validate(r, from_attributes=True) for r in rows]
