"""Messages that broke the contract (admins only: payloads may hold anything)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from trapline.server.api.deps import AdminDep, SessionDep
from trapline.server.models import DeadLetter

router = APIRouter(prefix="/dead-letters", tags=["ingest"])


class DeadLetterOut(BaseModel):
    id: int
    topic: str
    reason: str
    payload_bytes: int
    received_at: datetime


@router.get("", response_model=list[DeadLetterOut])
def list_dead_letters(
    session: SessionDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeadLetterOut]:
    rows = session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit))
    return [DeadLetterOut.model_validate(r, from_attributes=True) for r in rows]
