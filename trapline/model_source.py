"""Which model to run, resolved once: its bytes, and the manifest that describes it.

A signed bundle directory is verified first (signature, hashes, no unlisted file) and its model is
loaded from the very bytes that were hashed; its metadata comes only from the verified manifest.
A bare model file is a development convenience: its metadata may come from a `<model>.json`
sidecar, or from what the exporter embedded in the file. `resolve_model` treats a model file inside
a bundle directory as the bundle: pointing at the file must not bypass the signature, nor let a
file dropped beside it speak for the release.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from trapline.bundle import BundleError, load_verified_bundle
from trapline.keyring import Keyring
from trapline.manifest import MANIFEST_NAME, SIGNATURE_NAME, ModelManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    path: Path  # names the model (format from its suffix, messages); never read again
    content: bytes
    manifest: ModelManifest | None  # None: use the metadata embedded in the model file
    signed: bool  # the manifest and bytes come from a verified bundle

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @classmethod
    def unbundled(cls, path: Path) -> ModelSource:
        """A bare model file (development): bytes read once, metadata from a `<model>.json`
        sidecar if there is one, else from the file itself. A file inside a bundle folder, loaded
        without its key, gets neither the sidecar nor the (unverified) manifest: only what is
        embedded in the model."""
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read model file {path}: {exc}") from exc
        sidecar = path.with_suffix(".json")
        manifest = None
        if is_bundle(path.parent):
            log.warning("%s lies in a bundle loaded without its key: using only its embedded metadata", path)
        elif sidecar.is_file():
            try:
                manifest = ModelManifest.read(sidecar)
            except (OSError, ValueError) as exc:
                raise BundleError(f"{sidecar}: not a readable model manifest: {exc}") from exc
        return cls(path, content, manifest, signed=False)


def is_bundle(folder: Path) -> bool:
    return (folder / SIGNATURE_NAME).is_file() or (folder / MANIFEST_NAME).is_file()


def resolve_model(path: Path, trust: Keyring | Path) -> ModelSource:
    """The model at `path`: a bundle folder (or a file in one) is verified with the trusted keys
    (a keyring, its folder or one .pub file), BundleError if it does not check out; a bare file
    elsewhere is taken as is (development only)."""
    folder = path if path.is_dir() else path.parent
    if not is_bundle(folder):
        if path.is_dir():
            raise BundleError(f"{path}: not a bundle (needs {MANIFEST_NAME} and {SIGNATURE_NAME})")
        log.warning("loading %s without a signed bundle (fine for development, not for a fleet)", path)
        return ModelSource.unbundled(path)
    bundle = load_verified_bundle(folder, trust)
    if not path.is_dir() and path.name != bundle.manifest.model_file:
        raise BundleError(f"{path.name} is not the model of bundle {folder} ({bundle.manifest.model_file})")
    log.info(
        "bundle %s: %s v%s, signature and hashes verified",
        folder,
        bundle.manifest.name,
        bundle.manifest.version,
    )
    return ModelSource(folder / bundle.manifest.model_file, bundle.model_bytes, bundle.manifest, signed=True)
