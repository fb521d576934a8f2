"""Signed model bundles (DESIGN.md "Model bundle"): write on the server, verify on the trap.

A bundle is a directory (or a .tar.gz of one) with the model file(s), `manifest.json` and
`manifest.sig`: the Ed25519 signature of manifest.json's exact bytes. The manifest lists the
sha256 of every file. A trap loads a bundle only when the signature verifies against the public
key it was provisioned with and every hash matches.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

from pydantic import ValidationError

from trapline.files import atomic_write, file_sha256
from trapline.keyring import Keyring, KeyringError, key_id, read_private_key
from trapline.manifest import MANIFEST_NAME, SIGNATURE_NAME, ModelManifest

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """The bundle is incomplete, tampered with, or signed by a key we do not trust."""


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
    folder / public key file) and every hash checks out; BundleError saying what failed."""
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
    for name, expected in manifest.files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise BundleError(f"{folder}: file {name} listed in the manifest is missing")
        if file_sha256(path) != expected:
            raise BundleError(
                f"{folder}: {name} does not match its sha256 in the manifest (corrupt or tampered)"
            )
    return manifest


def pack_bundle(folder: Path, archive: Path) -> Path:
    """A .tar.gz of the bundle, for download."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def unpack_bundle(archive: bytes, target: Path) -> Path:
    """Extract a downloaded bundle safely (plain files only, no paths) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or Path(member.name).name != member.name:
                raise BundleError(f"bundle archive holds an unexpected entry {member.name!r}")
            source = tar.extractfile(member)
            if source is None:
                raise BundleError(f"bundle archive entry {member.name!r} cannot be read")
            atomic_write(target / member.name, source.read())
    return target


def resolve_model_file(path: Path, trust: Keyring | Path) -> Path:
    """The model file to load from `path`: a bundle directory is verified first (BundleError if it
    does not check out); a bare model file is taken as is (development only)."""
    if not path.is_dir():
        log.warning("loading %s without a signed bundle (fine for development, not for a fleet)", path)
        return path
    manifest = verify_bundle(path, trust)
    log.info("bundle %s: %s v%s, signature and hashes verified", path, manifest.name, manifest.version)
    return path / manifest.model_file
