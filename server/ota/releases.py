"""Releases: signed bundles registered on the server, stored as the archive the traps download.

`register_release` is the one way in, by hand (`trapline server release add`) or from a job (the
retraining job calls it with the bundle it built). The bundle is verified against the fleet's
keyring first (the release keyring as key rotation changed it), so the server never offers what a
trap would refuse.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.bundle import BundleError, pack_bundle, unpack_bundle, verify_bundle
from trapline.contracts import RollbackGrant, version_key
from trapline.files import file_sha256
from trapline.keyring import Keyring, KeyringError
from trapline.manifest import SIGNATURE_NAME
from trapline.rollback import verify_rollback
from trapline.server.core.config import ServerSettings
from trapline.server.models import ModelVersion, Release
from trapline.server.ota.key_rotations import KeyRotationError, fleet_keyring

log = logging.getLogger(__name__)


class ReleaseError(ValueError):
    """The bundle or grant cannot be accepted; the message says why."""


def releases_dir(settings: ServerSettings) -> Path:
    folder = settings.data_dir / "releases"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def archive_path(settings: ServerSettings, release: Release) -> Path | None:
    return releases_dir(settings) / release.archive_file if release.archive_file else None


def bundle_url(release_id: int) -> str:
    """Where traps download a release: a path on the server they already talk to."""
    return f"/api/v1/releases/{release_id}/bundle"


def _keyring(session: Session, settings: ServerSettings) -> Keyring:
    try:
        return fleet_keyring(session, settings)
    except KeyRotationError as exc:
        raise ReleaseError(str(exc)) from exc


def register_release(
    session: Session,
    settings: ServerSettings,
    bundle: Path,
    min_agent_version: str | None = None,
    grant: RollbackGrant | None = None,
) -> Release:
    """Verify `bundle` (a directory or its .tar.gz), keep its archive, record the release and its
    model version. Registering the same archive again returns the release it already is."""
    keyring = _keyring(session, settings)
    folder = releases_dir(settings)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".incoming-") as tmp:
        work = Path(tmp)
        try:
            unpacked = bundle if bundle.is_dir() else unpack_bundle(bundle.read_bytes(), work / "bundle")
            manifest = verify_bundle(unpacked, keyring)
        except (BundleError, OSError, EOFError) as exc:  # EOFError: a truncated archive
            raise ReleaseError(f"{bundle}: {exc}") from exc
        if version_key(manifest.version) is None:
            raise ReleaseError(
                f"version {manifest.version!r}: traps compare release versions, use numbers like 3 or 1.2"
            )
        archive = work / "bundle.tar.gz"
        if bundle.is_dir():
            pack_bundle(unpacked, archive)
        else:
            shutil.copyfile(bundle, archive)  # byte for byte: the hash the release manager saw
        sha256 = file_sha256(archive)
        model_sha256 = manifest.files[manifest.model_file]
        existing = session.scalar(
            select(Release).where(
                (Release.bundle_sha256 == sha256)
                | (
                    (Release.model_sha256 == model_sha256)
                    & (Release.name == manifest.name)
                    & (Release.version == manifest.version)
                )
            )
        )
        if existing is not None:
            return existing  # the same release again (a directory packs to new bytes each time)
        archive_file = f"{manifest.name}-{manifest.version}-{sha256[:12]}.tar.gz"
        os.replace(archive, folder / archive_file)
        signature = base64.b64encode((unpacked / SIGNATURE_NAME).read_bytes()).decode()
    model = session.scalar(select(ModelVersion).where(ModelVersion.sha256 == model_sha256))
    now = datetime.now(UTC)
    if model is None:
        model = ModelVersion(
            name=manifest.name,
            version=manifest.version,
            sha256=model_sha256,
            metrics=manifest.metrics,
            created_at=now,
        )
        session.add(model)
        session.flush()
    release = Release(
        model_id=model.id,
        bundle_url="",
        bundle_sha256=sha256,
        signature=signature,
        created_at=now,
        name=manifest.name,
        version=manifest.version,
        size_bytes=(folder / archive_file).stat().st_size,
        archive_file=archive_file,
        model_sha256=model_sha256,
        key_id=manifest.key_id,
        runtime=manifest.format,
        min_agent_version=min_agent_version or manifest.min_agent_version,
    )
    session.add(release)
    session.flush()
    release.bundle_url = bundle_url(release.id)
    if grant is not None:
        add_rollback_grant(session, settings, release.id, grant)
    log.info("release %d: %s v%s (%d bytes)", release.id, release.name, release.version, release.size_bytes)
    return release


def add_rollback_grant(
    session: Session, settings: ServerSettings, release_id: int, grant: RollbackGrant
) -> Release:
    """Keep a release manager's signed permission to roll traps back to this release."""
    release = session.get(Release, release_id)
    if release is None or release.name is None or release.version is None or release.model_sha256 is None:
        raise ReleaseError(f"no downloadable release {release_id}")
    try:
        verify_rollback(
            grant, _keyring(session, settings), release.name, release.version, release.model_sha256
        )
    except KeyringError as exc:
        raise ReleaseError(
            f"the grant is not for release {release_id}, or not signed by a release key: {exc}"
        ) from exc
    release.rollback_grant = grant.model_dump(mode="json")
    return release
