"""Biologists' labels: a species for one frame or for a whole sequence (burst) at once."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trapline.server.api.deps import SessionDep, UserDep
from trapline.server.models import DetectionFrame, Label, Sequence

router = APIRouter(prefix="/labels", tags=["labels"])


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    species: str = Field(min_length=1, max_length=200)
    frame_id: str | None = None
    sequence_id: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> LabelIn:
        if (self.frame_id is None) == (self.sequence_id is None):
            raise ValueError("label either a frame_id or a sequence_id")
        return self


class LabelOut(LabelIn):
    id: int
    labelled_by: str
    labelled_at: datetime


@router.post("", response_model=LabelOut, status_code=201)
def add_label(body: LabelIn, session: SessionDep, user: UserDep) -> LabelOut:
    if body.frame_id and session.get(DetectionFrame, body.frame_id) is None:
        raise HTTPException(404, f"no frame {body.frame_id!r}")
    if (
        body.sequence_id
        and session.get(Sequence, body.sequence_id) is None
        and not session.query(DetectionFrame.id)
        .filter(DetectionFrame.sequence_id == body.sequence_id)
        .first()
    ):
        raise HTTPException(404, f"no sequence {body.sequence_id!r}")
    label = Label(**body.model_dump(), labelled_by=user.name, labelled_at=datetime.now(UTC))
    session.add(label)
    session.commit()
    return LabelOut.model_validate(label, from_attributes=True)
