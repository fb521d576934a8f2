"""Exports for ecologists: Camtrap DP (validated) and MegaDetector batch JSON.

Any logged-in user may export (ecologists are viewers), but only `export_concurrency` exports are
built at once; more get 429 with Retry-After. The Camtrap DP ZIP is streamed: pictures are read
from the media store piece by piece as the client downloads, never gathered in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime
from starlette.background import BackgroundTask

from trapline.server.api.deps import SessionDep, SettingsDep, UserDep
from trapline.server.exports import camtrap_dp, megadetector
from trapline.server.exports.zip_stream import stream_zip

router = APIRouter(prefix="/exports", tags=["exports"])
RETRY_AFTER_S = 30


class _Slot:
    """One of the export slots, released exactly once (when the stream ends or is abandoned)."""

    def __init__(self, gate: threading.BoundedSemaphore) -> None:
        self._gate = gate
        self._released = threading.Event()

    def release(self) -> None:
        if not self._released.is_set():
            self._released.set()
            self._gate.release()


def _take_slot(request: Request) -> _Slot:
    state: Any = request.app.state
    gate: threading.BoundedSemaphore = state.export_gate
    if not gate.acquire(blocking=False):
        raise HTTPException(
            429, "another export is being built; try again shortly", {"Retry-After": str(RETRY_AFTER_S)}
        )
    return _Slot(gate)


@router.get(
    "/camtrap-dp", response_class=StreamingResponse, responses={200: {"content": {"application/zip": {}}}}
)
def camtrap_dp_zip(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _user: UserDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> StreamingResponse:
    """A Camtrap DP 1.0 package (ZIP) of the frames inside deployments; checked before it is sent."""
    slot = _take_slot(request)
    try:
        package = camtrap_dp.build_package(session, settings.media_dir, since, until)
        errors = camtrap_dp.validate_package(package.files)
        if errors:
            raise HTTPException(500, {"message": "export failed validation", "errors": errors[:20]})
    except BaseException:
        slot.release()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            yield from stream_zip(package.files, package.media_files)
        finally:
            slot.release()

    headers = {
        "Content-Disposition": 'attachment; filename="trapline-camtrap-dp.zip"',
        "X-Trapline-Skipped-Frames": str(package.skipped_frames),
    }
    # the background task also frees the slot when the client left before the first chunk
    return StreamingResponse(
        chunks(), media_type="application/zip", headers=headers, background=BackgroundTask(slot.release)
    )


@router.get("/megadetector")
def megadetector_json(
    request: Request,
    session: SessionDep,
    _user: UserDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> dict[str, Any]:
    slot = _take_slot(request)
    try:
        return megadetector.build(session, since, until)
    finally:
        slot.release()
