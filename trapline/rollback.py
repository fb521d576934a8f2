"""Signed rollbacks: a release key's permission to install one release over a newer model.

A trap refuses a release whose version is lower than the model it runs (anti-rollback: whoever
controls the server or the broker must not be able to push an old, validly signed model with a
known fault). Going back on purpose needs a grant: an Ed25519 signature, by a key in the trap's
keyring, over the model's name, version and model file hash (`rollback_statement`). The release
manager makes one with `trapline export rollback-grant`; the server stores it with the release.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from trapline.contracts import RollbackGrant, rollback_statement
from trapline.keyring import Keyring, KeyringError, key_id, read_private_key


def sign_rollback(private_key: Path, name: str, version: str, model_sha256: str) -> RollbackGrant:
    """A grant allowing model `name` `version` (model file `model_sha256`) back over newer models."""
    signer = read_private_key(private_key)
    signature = signer.sign(rollback_statement(name, version, model_sha256))
    return RollbackGrant(key_id=key_id(signer.public_key()), signature=base64.b64encode(signature).decode())


def verify_rollback(
    grant: RollbackGrant, keyring: Keyring, name: str, version: str, model_sha256: str
) -> str:
    """The id of the trusted key that signed `grant` for exactly this release; KeyringError otherwise."""
    try:
        signature = base64.b64decode(grant.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"rollback grant signature is not base64: {exc}") from exc
    return keyring.verify(signature, rollback_statement(name, version, model_sha256), grant.key_id)
