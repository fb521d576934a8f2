"""Exports for ecologists: Camtrap DP (validated) and MegaDetector batch JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from trapline.server.api.deps import SessionDep, SettingsDep, UserDep
from trapline.server.exports import camtrap_dp, megadetector

router = APIRouter(prefix="/exports", tags=["exports"])


@router.get("/camtrap-dp", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
def camtrap_dp_zip(
    session: SessionDep,
    settings: SettingsDep,
    _user: UserDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Response:
    """A Camtrap DP 1.0 package (ZIP) of the frames inside deployments; checked before it is sent."""
    try:
        package = camtrap_dp.build_package(session, settings.media_dir, since, until)
    except camtrap_dp.CamtrapExportError as exc:
        raise HTTPException(409, str(exc)) from exc
    errors = camtrap_dp.validate_package(package.files)
    if errors:
        raise HTTPException(500, {"message": "export failed validation", "errors": errors[:20]})
    headers = {
        "Content-Disposition": 'attachment; filename="trapline-camtrap-dp.zip"',
        "X-Trapline-Skipped-Frames": str(package.skipped_frames),
    }
    return Response(camtrap_dp.write_zip(package), media_type="application/zip", headers=headers)


@router.get("/megadetector")
def megadetector_json(
    session: SessionDep, _user: UserDep, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    return megadetector.build(session, since, until)
