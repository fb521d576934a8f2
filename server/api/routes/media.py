"""Pictures from traps: uploaded over HTTP with the device's token, stored content-addressed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select

from trapline.contracts import MEDIA_KINDS
from trapline.files import atomic_write
from trapline.server.api.deps import DeviceDep, SessionDep, SettingsDep, UserDep
from trapline.server.api.schemas import MediaOut
from trapline.server.models import Media

router = APIRouter(prefix="/media", tags=["media"])
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


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


@router.post("", response_model=MediaOut)
async def upload(
    device: DeviceDep,
    session: SessionDep,
    settings: SettingsDep,
    file: UploadFile,
    kind: Annotated[str, Form()],
    detection_id: Annotated[str | None, Form()] = None,
) -> MediaOut:
    if kind not in MEDIA_KINDS:
        raise HTTPException(422, f"kind must be one of {MEDIA_KINDS}")
    if detection_id and not detection_id.startswith(f"{device.id}:"):
        raise HTTPException(403, "a trap uploads only for its own detections")
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, "file too large")
    if data[:3] != b"\xff\xd8\xff" and data[:8] != b"\x89PNG\r\n\x1a\n":
        raise HTTPException(415, "only JPEG or PNG")
    digest, stored = store_bytes(settings.media_dir, data)
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
