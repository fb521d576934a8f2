"""Deployments: where a trap stood, and when (Camtrap DP needs them)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from trapline.server.api.deps import AdminDep, SessionDep, UserDep
from trapline.server.models import Deployment, Device

router = APIRouter(prefix="/deployments", tags=["deployments"])


class DeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    location_name: str | None = None
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    start: datetime
    end: datetime | None = None

    @model_validator(mode="after")
    def _order(self) -> DeploymentIn:
        if self.start.tzinfo is None or (self.end is not None and self.end.tzinfo is None):
            raise ValueError("start and end need a timezone")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DeploymentOut(DeploymentIn):
    id: int


@router.post("", response_model=DeploymentOut, status_code=201)
def create(body: DeploymentIn, session: SessionDep, _admin: AdminDep) -> DeploymentOut:
    if session.get(Device, body.device_id) is None:
        raise HTTPException(404, f"no device {body.device_id!r}")
    deployment = Deployment(**body.model_dump())
    session.add(deployment)
    session.commit()
    return DeploymentOut.model_validate(deployment, from_attributes=True)


@router.get("", response_model=list[DeploymentOut])
def list_all(session: SessionDep, _user: UserDep) -> list[DeploymentOut]:
    rows = session.scalars(select(Deployment).order_by(Deployment.device_id, Deployment.start))
    return [DeploymentOut.model_validate(r, from_attributes=True) for r in rows]
