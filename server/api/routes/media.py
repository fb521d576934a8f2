"""Pictures from traps: uploaded over HTTP with the device's token, stored content-addressed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import select

from trapline.contracts import ID_MAX, MEDIA_KINDS
from trapline.files import atomic_write
from trapline.server.api.deps import DeviceDep, SessionDep, SettingsDep, UserDep
from trapline.server.api.schemas import MediaOut
from trapline.server.api.uploads import BINARY, file_bytes, multipart_form, read_form, text_field
from trapline.server.models import Media

router = APIRouter(prefix="/media", tags=["media"])
MULTIPART_UPLOAD = multipart_form(
    ["file", "kind"],
    {
        "file": BINARY,
        "kind": {"type": "string", "enum": list(MEDIA_KINDS)},
        "detection_id": {"type": "string"},
    },
)


def media_path(root: Path, sha256: str) -> Path:
    return root / sha256[:2] / sha256


def store_bytes(root: Path, data: bytes) -> tuple[str, bool]:
    """Write once under its hash (temp file, fsync, rename); (sha256, newly stored)."""
    digest = hashlib.sha256(data).hexdigest()
    target = media_path(root, digest)
    if target.exists():
        return digest, False
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return digest, True


@router.post("", response_model=MediaOut, openapi_extra=MULTIPART_UPLOAD)
async def upload(request: Request, device: DeviceDep, session: SessionDep, settings: SettingsDep) -> MediaOut:
    """A picture (`file`, JPEG or PNG) of `kind` for the trap's detection `detection_id`.

    The trap's token and the declared size are checked before the body is read."""
    form = await read_form(request, settings.max_upload_bytes)
    try:
        kind = text_field(form, "kind", 16)
        detection_id = text_field(form, "detection_id", ID_MAX)
        if kind not in MEDIA_KINDS:
            raise HTTPException(422, f"kind must be one of {MEDIA_KINDS}")
        if detection_id and not detection_id.startswith(f"{device.id}:"):
            raise HTTPException(403, "a trap uploads only for its own detections")
        data = await file_bytes(form, "file", settings.max_upload_bytes)
    finally:
        await form.close()
    if data[:3] != b"\xff\xd8\xff" and data[:8] != b"\x89PNG\r\n\x1a\n":
        raise HTTPException(415, "only JPEG or PNG")
    digest, stored = await run_in_threadpool(store_bytes, settings.media_dir, data)
    link = select(Media.id).where(
        Media.sha256 == digest, Media.detection_id == detection_id, Media.kind == kind
    )
    if session.scalar(link) is None:
        session.add(
            Media(
                sha256=digest,
                device_id=device.id,
                kind=kind,
                detection_id=detection_id,
                content_type="image/png" if data[:4] == b"\x89PNG" else "image/jpeg",
                bytes=len(data),
                uploaded_at=datetime.now(UTC),
            )
        )
        session.commit()
    return MediaOut(sha256=digest, kind=kind, bytes=len(data), stored=stored)


@router.get("/{sha256}")
def download(sha256: str, session: SessionDep, settings: SettingsDep, _user: UserDep) -> FileResponse:
    item = session.scalar(select(Media).where(Media.sha256 == sha256).limit(1))
    if item is None or not media_path(settings.media_dir, sha256).exists():
        raise HTTPException(404, "no such media")
    return FileResponse(media_path(settings.media_dir, sha256), media_type=item.content_type)
