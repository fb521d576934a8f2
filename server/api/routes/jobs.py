"""Background jobs: request a dataset export, follow its progress, download the result."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from trapline.server.api.deps import AdminDep, SessionDep, UserDep
from trapline.server.models import Job

router = APIRouter(prefix="/jobs", tags=["jobs"])


class DatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str | None = None
    category: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    min_conf: float | None = Field(None, ge=0, le=1)


class JobOut(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    state: str
    progress: float
    message: str | None
    created_at: datetime
    updated_at: datetime


@router.post("/dataset", response_model=JobOut, status_code=202)
def request_dataset(body: DatasetRequest, session: SessionDep, request: Request, _admin: AdminDep) -> JobOut:
    """Queue a ZIP of pictures with YOLO labels for the frames matching the filters."""
    job_id = request.app.state.jobs.enqueue_dataset(body.model_dump(mode="json", exclude_none=True))
    return JobOut.model_validate(session.get(Job, job_id), from_attributes=True)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, _user: UserDep) -> JobOut:
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return JobOut.model_validate(job, from_attributes=True)


@router.get("/{job_id}/download")
def download(job_id: str, session: SessionDep, _user: UserDep) -> FileResponse:
    job = session.get(Job, job_id)
    if job is None or job.state != "done" or not job.result_path or not Path(job.result_path).exists():
        raise HTTPException(409, "the job has not produced a result (yet)")
    return FileResponse(
        job.result_path, media_type="application/zip", filename=f"trapline-dataset-{job_id}.zip"
    )
