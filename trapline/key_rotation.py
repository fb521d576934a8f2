"""Key rotation: signed statements that change the keyring a trap trusts.

A statement adds public keys and revokes key ids (`KeyRotationStatement` in trapline/contracts.py).
It carries a sequence number that only grows and an Ed25519 signature, by a key the trap trusts at
the moment it applies the statement, over `KeyRotationStatement.signed_bytes()`. The release
manager signs one with `trapline keys rotate`; the server publishes the newest statements retained
on each trap's `cmd/keys`; the trap (edge/key_rotation.py) and the server (before publishing) judge
them with the same functions here, so the server never sends what a trap would refuse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from trapline.contracts import AddedKey, KeyRotationStatement, key_rotation_statement, utc_now
from trapline.keyring import Keyring, KeyringError, key_id, raw_public_key, read_private_key


class RotationError(KeyringError):
    """A statement that must not be applied to this keyring; the message says why."""


def sign_rotation(
    private_key: Path,
    sequence: int,
    add: Iterable[Ed25519PublicKey] = (),
    revoke: Iterable[str] = (),
    issued_at: datetime | None = None,
) -> KeyRotationStatement:
    """A statement adding `add` and revoking `revoke`, signed with the key in `private_key`."""
    signer = read_private_key(private_key)
    signer_id = key_id(signer.public_key())
    added = {key_id(key): raw_public_key(key).hex() for key in add}
    revoked = sorted(set(revoke))
    if signer_id in revoked:
        raise RotationError(
            f"a statement may not revoke the key that signs it ({signer_id}): sign it with another"
            " trusted key, or first add a new key and then revoke this one with the new key"
        )
    when = issued_at or utc_now()
    # what travels is milliseconds: sign exactly what the trap will read back
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    body = key_rotation_statement(sequence, when, signer_id, added, revoked)
    try:
        return KeyRotationStatement(
            sequence=sequence,
            issued_at=when,
            add=[AddedKey(key_id=k, public_key=v) for k, v in sorted(added.items())],
            revoke=revoked,
            key_id=signer_id,
            signature=base64.b64encode(signer.sign(body)).decode(),
        )
    except ValidationError as exc:
        raise RotationError(f"not a valid key rotation statement: {exc.errors()[0]['msg']}") from exc


def statement_digest(statement: KeyRotationStatement) -> str:
    """Names a statement: what is signed and the signature (two statements with one sequence differ)."""
    return hashlib.sha256(statement.signed_bytes() + statement.signature.encode()).hexdigest()


def _described(ids: Iterable[str]) -> str:
    return ", ".join(sorted(ids)) or "none"


def changed_keys(keyring: Keyring, statement: KeyRotationStatement) -> dict[str, Ed25519PublicKey]:
    """The keys after `statement`'s change, without judging it (`apply_rotation` judges first)."""
    keys = dict(keyring.keys)
    for added in statement.add:
        keys[added.key_id] = Ed25519PublicKey.from_public_bytes(bytes.fromhex(added.public_key))
    for revoked in statement.revoke:
        keys.pop(revoked, None)
    return keys


def apply_rotation(keyring: Keyring, statement: KeyRotationStatement) -> Keyring:
    """The keyring after `statement`; RotationError when a trap trusting `keyring` must refuse it."""
    sequence, signer = statement.sequence, statement.key_id
    if signer not in keyring.keys:
        raise RotationError(
            f"statement {sequence} is signed by key {signer}, which is not trusted here"
            f" (trusted: {_described(keyring.keys)})"
        )
    try:
        signature = base64.b64decode(statement.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RotationError(f"statement {sequence}: the signature is not base64: {exc}") from exc
    try:
        keyring.verify(signature, statement.signed_bytes(), signer)
    except KeyringError as exc:
        raise RotationError(
            f"statement {sequence}: the signature does not verify with key {signer} (tampered or forged)"
        ) from exc
    keys = changed_keys(keyring, statement)
    # the contract refuses both already (a statement may not revoke its signer, so its signer
    # stays); the keyring does not rely on that
    if not keys:
        raise RotationError(f"statement {sequence} would leave no trusted key")
    if signer in statement.revoke:
        raise RotationError(f"statement {sequence} revokes the key that signs it ({signer})")
    return Keyring(keys, f"{keyring.source} + statement {sequence}")


def in_effect(keyring: Keyring, statement: KeyRotationStatement) -> bool:
    """Nothing to change: every added key is trusted already and no revoked one is."""
    added = all(
        a.key_id in keyring.keys and raw_public_key(keyring.keys[a.key_id]).hex() == a.public_key
        for a in statement.add
    )
    return added and not any(r in keyring.keys for r in statement.revoke)


@dataclass
class ChainResult:
    """What a list of statements did to a keyring at `sequence` (see `apply_statements`)."""

    keyring: Keyring
    sequence: int  # the last statement applied (unchanged when none was)
    digest: str | None  # of that statement
    applied: list[KeyRotationStatement] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (sequence, why)
    in_effect: list[int] = field(default_factory=list)  # not verifiable here, but nothing to change

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def apply_statements(
    keyring: Keyring,
    sequence: int,
    digest: str | None,
    statements: Sequence[KeyRotationStatement],
) -> ChainResult:
    """Apply, oldest first, each statement newer than `sequence` (the last one applied, whose digest
    is `digest`), each verified against the keyring the ones before left.

    A statement that does not verify is refused and changes nothing; the ones after it are still
    judged on their own (each needs a key trusted at that point, so skipping one grants nothing).
    One that does not verify but whose change is already in place (a trap provisioned after the
    rotation) is passed over quietly. When no statement is newer, the newest must be the one
    applied last: an older list, or another statement under the applied sequence, is refused as a
    replay."""
    result = ChainResult(keyring, sequence, digest)
    if not statements:
        return result
    newest = statements[-1]
    if newest.sequence < sequence:
        result.refused.append(
            (
                newest.sequence,
                f"statement {newest.sequence} is older than statement {sequence}, which this trap"
                " applied: a replayed or stale statement",
            )
        )
        return result
    if newest.sequence == sequence:
        if digest is not None and statement_digest(newest) != digest:
            result.refused.append(
                (
                    newest.sequence,
                    f"statement {sequence} is not the statement {sequence} this trap applied:"
                    " a sequence number is used once",
                )
            )
        return result
    for statement in statements:
        if statement.sequence <= result.sequence:
            continue  # history the trap has been through: the list keeps it for traps that were away
        try:
            result.keyring = apply_rotation(result.keyring, statement)
        except RotationError as exc:
            if in_effect(result.keyring, statement):
                result.in_effect.append(statement.sequence)
            else:
                result.refused.append((statement.sequence, str(exc)))
            continue
        result.sequence, result.digest = statement.sequence, statement_digest(statement)
        result.applied.append(statement)
    return result


def describe(statement: KeyRotationStatement) -> str:
    """One line for logs and reports."""
    added = _described(a.key_id for a in statement.add)
    return f"statement {statement.sequence} by key {statement.key_id}: added {added}, revoked " + _described(
        statement.revoke
    )
