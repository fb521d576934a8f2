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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from trapline.files import atomic_write, file_sha256
from trapline.manifest import MANIFEST_NAME, SIGNATURE_NAME, ModelManifest

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """The bundle is incomplete, tampered with, or signed by a key we do not trust."""


def generate_keys(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair: private key PEM (mode 0600), public key PEM."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(private_path, pem, 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write(public_path, public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path} is not an Ed25519 public key")
    return key


def sign_bundle(folder: Path, manifest: ModelManifest, private_key: Path) -> ModelManifest:
    """Hash every file in `folder`, write manifest.json and its signature."""
    files = {
        p.name: file_sha256(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME) and not p.name.startswith(".")
    }
    if manifest.model_file not in files:
        raise BundleError(f"model file {manifest.model_file} is not in {folder}")
    manifest = manifest.model_copy(update={"files": files})
    body = manifest.to_json()
    atomic_write(folder / MANIFEST_NAME, body)
    atomic_write(folder / SIGNATURE_NAME, load_private_key(private_key).sign(body))
    return manifest


def verify_bundle(folder: Path, public_key: Path) -> ModelManifest:
    """The bundle's manifest if signature and hashes check out; BundleError saying what failed."""
    manifest_path, signature_path = folder / MANIFEST_NAME, folder / SIGNATURE_NAME
    if not manifest_path.is_file() or not signature_path.is_file():
        raise BundleError(f"{folder}: not a bundle (needs {MANIFEST_NAME} and {SIGNATURE_NAME})")
    body = manifest_path.read_bytes()
    try:
        load_public_key(public_key).verify(signature_path.read_bytes(), body)
    except InvalidSignature as exc:
        raise BundleError(
            f"{folder}: manifest signature does not verify with {public_key.name}"
            " (tampered manifest, or signed by another key)"
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


def resolve_model_file(path: Path, public_key: Path) -> Path:
    """The model file to load from `path`: a bundle directory is verified first (BundleError if it
    does not check out); a bare model file is taken as is (development only)."""
    if not path.is_dir():
        log.warning("loading %s without a signed bundle (fine for development, not for a fleet)", path)
        return path
    manifest = verify_bundle(path, public_key)
    log.info("bundle %s: %s v%s, signature and hashes verified", path, manifest.name, manifest.version)
    return path / manifest.model_file
