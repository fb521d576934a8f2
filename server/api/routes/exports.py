"""Exports for ecologists: Camtrap DP (validated) and MegaDetector batch JSON.

Any logged-in user may export (ecologists are viewers), but only `export_concurrency` exports are
built at once; more get 429 with Retry-After. The Camtrap DP ZIP is streamed: pictures are read
from the media store piece by piece as the client downloads, never gathered in memory.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from trapline.server.api.deps import SessionDep, SettingsDep, UserDep
from trapline.server.core.config import ServerSettings
from trapline.server.exports import camtrap_dp, megadetector
from trapline.server.exports.zip_stream import file_chunks, zip_chunks

router = APIRouter(prefix="/exports", tags=["exports"])
RETRY_AFTER_S = 30


class _Slot:
    """One of the export slots, released exactly once (when the stream ends or is abandoned)."""

    def __init__(self, gate: threading.BoundedSemaphore) -> None:
        self._gate = gate
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if not self._released:
                self._released = True
                self._gate.release()


def _take_slot(request: Request) -> _Slot:
    state: Any = request.app.state
    gate: threading.BoundedSemaphore = state.export_gate
    if not gate.acquire(blocking=False):
        raise HTTPException(
            429, "another export is being built; try again shortly", {"Retry-After": str(RETRY_AFTER_S)}
        )
    return _Slot(gate)


def _spool_tables(
    session: Session, settings: ServerSettings, since: datetime | None, until: datetime | None, folder: Path
) -> tuple[list[camtrap_dp.Entry], list[camtrap_dp.Entry]]:
    """The package's tables written to `folder` (to be validated before anything is sent) and
    its pictures as (name, file) entries; no content is held in memory."""
    tables: list[camtrap_dp.Entry] = []
    pictures: list[camtrap_dp.Entry] = []
    for entry in camtrap_dp.package_entries(session, settings.media_dir, since, until):
        if entry.source is not None:
            pictures.append(entry)
            continue
        target = folder / entry.path
        with target.open("wb") as out:
            for chunk in entry.chunks or ():
                out.write(chunk)
        tables.append(camtrap_dp.Entry(entry.path, chunks=file_chunks(target)))
    return tables, pictures


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
    """A Camtrap DP package (ZIP) of the frames inside deployments; validated before it is sent."""
    slot = _take_slot(request)
    scratch = tempfile.TemporaryDirectory(prefix="camtrap-export-")

    def done() -> None:
        scratch.cleanup()
        slot.release()

    try:
        try:
            tables, pictures = _spool_tables(session, settings, since, until, Path(scratch.name))
        except camtrap_dp.CamtrapExportError as exc:
            raise HTTPException(409, str(exc)) from exc
        errors = camtrap_dp.validate_folder(Path(scratch.name))
        if errors:
            raise HTTPException(500, {"message": "export failed validation", "errors": errors[:20]})
        skipped = camtrap_dp.skipped_frames(session, since, until)
    except BaseException:
        done()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            yield from zip_chunks([*tables, *pictures])
        finally:
            done()

    headers = {
        "Content-Disposition": 'attachment; filename="trapline-camtrap-dp.zip"',
        "X-Trapline-Skipped-Frames": str(skipped),
    }
    # the background task also cleans up when the client left before the first chunk
    return StreamingResponse(
        chunks(), media_type="application/zip", headers=headers, background=BackgroundTask(done)
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
