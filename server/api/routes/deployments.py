"""Deployments: where a trap stood, and when (Camtrap DP needs them)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select

from trapline.enrolment import DEPLOYMENT_REPORT_PATH, DeploymentReport
from trapline.server.api.deps import AdminDep, DeviceDep, SessionDep, SettingsDep, UserDep
from trapline.server.api.routes.media import media_path, store_bytes
from trapline.server.api.uploads import BINARY, file_bytes, multipart_form, read_form, text_field
from trapline.server.fleet import RegistryError, record_deployment
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
    site_id: str | None = None
    camera_height_m: float | None = None
    camera_heading_deg: float | None = None
    camera_tilt_deg: float | None = None
    reference_photo_sha256: str | None = None
    setup_by: str | None = None
    comments: str | None = None


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


# the report's JSON: a few kilobytes (names, a place, a free-text note)
REPORT_MAX_CHARS = 64 * 1024
DEPLOYMENT_FORM = multipart_form(
    ["deployment"],
    {"deployment": {"type": "string", "description": "trapline.deployment/1 JSON"}, "photo": BINARY},
)


@router.post(
    DEPLOYMENT_REPORT_PATH.removeprefix("/api/v1/deployments"),
    response_model=DeploymentOut,
    openapi_extra=DEPLOYMENT_FORM,
)
async def report(
    request: Request, device: DeviceDep, session: SessionDep, settings: SettingsDep
) -> DeploymentOut:
    """A trap says where and how it was set up, with its reference photo (its upload token; the
    token and the declared size are checked before the body is read)."""
    form = await read_form(request, settings.max_upload_bytes)
    try:
        deployment = text_field(form, "deployment", REPORT_MAX_CHARS)
        if deployment is None:
            raise HTTPException(422, "a field 'deployment' is needed")
        try:
            body = DeploymentReport.model_validate_json(deployment)
        except ValidationError as exc:
            raise HTTPException(422, f"not a deployment report: {exc.errors(include_url=False)}") from exc
        data = await file_bytes(form, "photo", settings.max_upload_bytes) if "photo" in form else None
    finally:
        await form.close()
    if data is not None:
        if data[:3] != b"\xff\xd8\xff":
            raise HTTPException(415, "the reference photo must be a JPEG")
        if hashlib.sha256(data).hexdigest() != body.reference_photo_sha256:
            raise HTTPException(422, "the photo is not the one the report names (sha256)")
        await run_in_threadpool(store_bytes, settings.media_dir, data)
    try:
        row = record_deployment(session, device, body)
    except RegistryError as exc:
        session.rollback()
        raise HTTPException(exc.status, str(exc)) from exc
    session.commit()
    return DeploymentOut.model_validate(row, from_attributes=True)


@router.get("/{deployment_id}/reference-photo")
def reference_photo(
    deployment_id: int, session: SessionDep, settings: SettingsDep, _user: UserDep
) -> FileResponse:
    row = session.get(Deployment, deployment_id)
    if row is None or row.reference_photo_sha256 is None:
        raise HTTPException(404, "no reference photo for this deployment")
    path = media_path(settings.media_dir, row.reference_photo_sha256)
    if not path.exists():
        raise HTTPException(404, "the reference photo has not arrived")
    return FileResponse(path, media_type="image/jpeg")
