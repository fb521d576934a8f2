"""Signed model bundles (DESIGN.md "Model bundle"): write on the server, verify on the trap.

A bundle is a directory (or a .tar.gz of one) with the model file(s), `manifest.json` and
`manifest.sig`: the Ed25519 signature of manifest.json's exact bytes. The manifest lists the
sha256 of every file. A trap loads a bundle only when the signature verifies with a key of the
keyring it was provisioned with, every hash matches and no file is there that the manifest does
not list (an unsigned file must never be read as if it were part of the release). The model's
bytes are read once: the bytes that were hashed are the bytes the runtime loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from trapline.files import atomic_write, file_sha256
from trapline.keyring import Keyring, KeyringError, key_id, read_private_key
from trapline.manifest import MANIFEST_NAME, SIGNATURE_NAME, ModelManifest

log = logging.getLogger(__name__)


# what a downloaded archive may hold: a bundle is a model, a manifest and a few reports
MAX_ARCHIVE_FILES = 64
MAX_ARCHIVE_FILE_BYTES = 256 * 1024 * 1024
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024


class BundleError(ValueError):
    """The bundle is incomplete, tampered with, or signed by a key we do not trust."""


@dataclass(frozen=True)
class VerifiedBundle:
    folder: Path
    manifest: ModelManifest
    model_bytes: bytes  # exactly the bytes whose sha256 matched the signed manifest


def sign_bundle(folder: Path, manifest: ModelManifest, private_key: Path) -> ModelManifest:
    """Hash every file in `folder`, write manifest.json and its signature."""
    files = {
        p.name: file_sha256(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME) and not p.name.startswith(".")
    }
    if manifest.model_file not in files:
        raise BundleError(f"model file {manifest.model_file} is not in {folder}")
    try:
        signer = read_private_key(private_key)
    except KeyringError as exc:
        raise BundleError(str(exc)) from exc
    manifest = manifest.model_copy(update={"files": files, "key_id": key_id(signer.public_key())})
    body = manifest.to_json()
    atomic_write(folder / MANIFEST_NAME, body)
    atomic_write(folder / SIGNATURE_NAME, signer.sign(body))
    return manifest


def _trusted(trust: Keyring | Path) -> Keyring:
    try:
        return trust if isinstance(trust, Keyring) else Keyring.load(trust)
    except KeyringError as exc:
        raise BundleError(str(exc)) from exc


def verify_bundle(folder: Path, trust: Keyring | Path) -> ModelManifest:
    """The bundle's manifest if its signature verifies with a trusted key (a keyring, or a keyring
    folder / public key file), every hash checks out and no file is unlisted; BundleError saying
    what failed."""
    return load_verified_bundle(folder, trust).manifest


def load_verified_bundle(folder: Path, trust: Keyring | Path) -> VerifiedBundle:
    """Verify the bundle (as `verify_bundle`) and return its manifest with the model's bytes,
    read once: the bytes that were hashed."""
    manifest_path, signature_path = folder / MANIFEST_NAME, folder / SIGNATURE_NAME
    if not manifest_path.is_file() or not signature_path.is_file():
        raise BundleError(f"{folder}: not a bundle (needs {MANIFEST_NAME} and {SIGNATURE_NAME})")
    body = manifest_path.read_bytes()
    keyring = _trusted(trust)
    try:
        # the signer's id is read before the signature is checked: it only picks the key to try
        named = ModelManifest.model_validate_json(body).key_id
    except ValidationError:
        named = None
    try:
        keyring.verify(signature_path.read_bytes(), body, named)
    except KeyringError as exc:
        raise BundleError(
            f"{folder}: manifest signature does not verify: {exc} (tampered manifest, or signed by"
            " a key this trap does not trust)"
        ) from exc
    try:
        manifest = ModelManifest.model_validate_json(body)
    except ValidationError as exc:
        raise BundleError(f"{folder}: signed manifest is invalid: {exc}") from exc
    if manifest.model_file not in manifest.files:
        raise BundleError(f"{folder}: manifest does not list the model file {manifest.model_file}")
    unlisted = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in manifest.files and entry.name not in (MANIFEST_NAME, SIGNATURE_NAME)
    )
    if unlisted:
        raise BundleError(
            f"{folder}: {', '.join(unlisted[:5])} not listed in the signed manifest (dropped in?)"
        )
    model_bytes = b""
    for name, expected in manifest.files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise BundleError(f"{folder}: file {name} listed in the manifest is missing")
        if name == manifest.model_file:
            model_bytes = path.read_bytes()
            actual = hashlib.sha256(model_bytes).hexdigest()
        else:
            actual = file_sha256(path)
        if actual != expected:
            raise BundleError(
                f"{folder}: {name} does not match its sha256 in the manifest (corrupt or tampered)"
            )
    return VerifiedBundle(folder, manifest, model_bytes)


def pack_bundle(folder: Path, archive: Path) -> Path:
    """A .tar.gz of the bundle, for download."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def unpack_bundle(
    archive: bytes,
    target: Path,
    max_files: int = MAX_ARCHIVE_FILES,
    max_file_bytes: int = MAX_ARCHIVE_FILE_BYTES,
    max_total_bytes: int = MAX_ARCHIVE_BYTES,
) -> Path:
    """Extract a downloaded bundle safely into `target`: plain files only, no paths, no name twice,
    and bounded in count and size (checked on each header, before its data is read), streamed
    to disk so a large member never sits in memory."""
    target.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar:  # one header at a time: a bomb is refused before it is inflated
                if not member.isfile() or Path(member.name).name != member.name or member.name in seen:
                    raise BundleError(f"bundle archive holds an unexpected entry {member.name!r}")
                seen.add(member.name)
                if len(seen) > max_files:
                    raise BundleError(f"bundle archive holds more than {max_files} files")
                if member.size > max_file_bytes:
                    raise BundleError(
                        f"bundle archive entry {member.name!r} is {member.size} bytes"
                        f" (limit {max_file_bytes})"
                    )
                total += member.size
                if total > max_total_bytes:
                    raise BundleError(f"bundle archive unpacks to more than {max_total_bytes} bytes")
                source = tar.extractfile(member)
                if source is None:
                    raise BundleError(f"bundle archive entry {member.name!r} cannot be read")
                _stream_to(target / member.name, source)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"bundle archive is damaged: {exc}") from exc
    return target


def _stream_to(path: Path, source: IO[bytes]) -> None:
    """Copy an archive member to `path` through a temp file, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            while block := source.read(1 << 20):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
