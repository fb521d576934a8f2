"""Key rotation statements: signed by a trusted key over their canonical text; tampering,
replays, untrusted or revoked signers, revoking the signer and emptying the keyring are refused."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from trapline.contracts import (
    KeyRotationStatement,
    KeysCommand,
    OtaProgress,
    key_rotation_statement,
    parse_payload,
)
from trapline.key_rotation import (
    RotationError,
    apply_rotation,
    apply_statements,
    in_effect,
    sign_rotation,
    statement_digest,
)
from trapline.keyring import Keyring, generate_keys, read_private_key, read_public_key


@dataclass(frozen=True)
class Key:
    id: str
    private: Path
    public: Path

    def pub(self) -> Ed25519PublicKey:
        return read_public_key(self.public.read_bytes(), str(self.public))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Key]:
    made = {}
    for name in ("old", "new", "backup", "stranger"):
        private, public = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
        made[name] = Key(generate_keys(private, public), private, public)
    return made


def _keyring(*keys: Key) -> Keyring:
    return Keyring({k.id: k.pub() for k in keys}, "test")


def _tampered(statement: KeyRotationStatement, **changes: object) -> KeyRotationStatement:
    body = json.loads(statement.to_json())
    body.update(changes)
    return KeyRotationStatement.model_validate_json(json.dumps(body))


def test_a_statement_signed_by_a_trusted_key_adds_and_revokes(keys: dict[str, Key]) -> None:
    keyring = _keyring(keys["old"], keys["backup"])
    statement = sign_rotation(keys["backup"].private, 1, add=[keys["new"].pub()], revoke=[keys["old"].id])
    after = apply_rotation(keyring, statement)
    assert set(after.keys) == {keys["backup"].id, keys["new"].id}
    # the added key is the very key given, not just its id
    signature = read_private_key(keys["new"].private).sign(b"bundle")
    assert after.verify(signature, b"bundle", keys["new"].id) == keys["new"].id
    # it travels as JSON and reads back to the same signed text
    wire = KeysCommand(statements=[statement]).to_json()
    again = parse_payload("cmd/keys", wire).statements[0]
    assert again.signed_bytes() == statement.signed_bytes()
    assert set(apply_rotation(keyring, again).keys) == set(after.keys)
    assert in_effect(after, statement) and not in_effect(keyring, statement)


def test_the_signed_text_is_canonical(keys: dict[str, Key]) -> None:
    when = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    statement = sign_rotation(keys["old"].private, 7, add=[keys["new"].pub()], revoke=[], issued_at=when)
    text = statement.signed_bytes().decode().splitlines()
    assert text[:4] == [
        "trapline.key-rotation/1",
        "sequence 7",
        "issued_at 2026-12-01T10:00:00.123+00:00",
        f"signer {keys['old'].id}",
    ]
    assert text[4].startswith(f"add {keys['new'].id} ") and len(text[4].split()[2]) == 64
    # the same instant in another offset is the same statement
    shifted = _tampered(statement, issued_at="2026-12-01T11:00:00.123+01:00")
    assert shifted.signed_bytes() == statement.signed_bytes()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sequence": 8}, "does not verify"),
        ({"issued_at": "2027-01-01T00:00:00.000+00:00"}, "does not verify"),
        ({"revoke": ["0123456789abcdef"]}, "does not verify"),
    ],
)
def test_a_tampered_statement_is_refused(
    keys: dict[str, Key], change: dict[str, object], expected: str
) -> None:
    keyring = _keyring(keys["old"])
    statement = sign_rotation(keys["old"].private, 7, add=[keys["new"].pub()])
    with pytest.raises(RotationError, match=expected):
        apply_rotation(keyring, _tampered(statement, **change))


def test_an_added_key_swapped_for_another_is_refused(keys: dict[str, Key]) -> None:
    statement = sign_rotation(keys["old"].private, 1, add=[keys["new"].pub()])
    stranger = sign_rotation(keys["old"].private, 1, add=[keys["stranger"].pub()])
    forged = _tampered(statement, add=json.loads(stranger.to_json())["add"])
    with pytest.raises(RotationError, match="does not verify"):
        apply_rotation(_keyring(keys["old"]), forged)
    # and an id that does not name its key does not even parse
    body = json.loads(statement.to_json())
    body["add"][0]["key_id"] = keys["stranger"].id
    with pytest.raises(ValidationError, match="is not the id of the key"):
        KeyRotationStatement.model_validate_json(json.dumps(body))


def test_a_statement_by_an_untrusted_or_revoked_key_is_refused(keys: dict[str, Key]) -> None:
    by_stranger = sign_rotation(keys["stranger"].private, 1, add=[keys["stranger"].pub()])
    with pytest.raises(RotationError, match=f"signed by key {keys['stranger'].id}, which is not trusted"):
        apply_rotation(_keyring(keys["old"]), by_stranger)
    # a signature that names a trusted key but was made by another
    forged = _tampered(by_stranger, key_id=keys["old"].id)
    with pytest.raises(RotationError, match="does not verify"):
        apply_rotation(_keyring(keys["old"]), forged)
    # once revoked, a key's statements are refused
    revoke_old = sign_rotation(keys["backup"].private, 1, revoke=[keys["old"].id])
    after = apply_rotation(_keyring(keys["old"], keys["backup"]), revoke_old)
    by_old = sign_rotation(keys["old"].private, 2, add=[keys["stranger"].pub()])
    with pytest.raises(RotationError, match="not trusted"):
        apply_rotation(after, by_old)


def _past_the_contract(honest: KeyRotationStatement, signer: Key, revoke: list[str]) -> KeyRotationStatement:
    """Signed for real, built without the contract's checks (as a buggy or hostile signer could)."""
    body = key_rotation_statement(honest.sequence, honest.issued_at, signer.id, {}, revoke)
    signature = base64.b64encode(read_private_key(signer.private).sign(body)).decode()
    made = KeyRotationStatement.model_construct(**{**dict(honest), "revoke": revoke, "signature": signature})
    assert made.signed_bytes() == body
    return made


def test_revoking_the_signer_or_every_key_is_refused(keys: dict[str, Key]) -> None:
    with pytest.raises(RotationError, match="may not revoke the key that signs it"):
        sign_rotation(keys["old"].private, 1, revoke=[keys["old"].id])
    honest = sign_rotation(keys["old"].private, 1, revoke=[keys["backup"].id])
    with pytest.raises(ValidationError, match="may not revoke the key that signs it"):
        _tampered(honest, revoke=[keys["old"].id])  # as the contract reads it off the wire
    # the keyring refuses them on its own
    own = _past_the_contract(honest, keys["old"], [keys["old"].id])
    with pytest.raises(RotationError, match="revokes the key that signs it"):
        apply_rotation(_keyring(keys["old"], keys["backup"]), own)
    every = _past_the_contract(honest, keys["old"], [keys["old"].id, keys["backup"].id])
    with pytest.raises(RotationError, match="would leave no trusted key"):
        apply_rotation(_keyring(keys["old"], keys["backup"]), every)
    with pytest.raises(RotationError, match="would leave no trusted key"):
        apply_rotation(_keyring(keys["old"]), own)
    nothing = {**json.loads(honest.to_json()), "revoke": []}
    with pytest.raises(ValidationError, match="must add or revoke"):
        KeyRotationStatement.model_validate_json(json.dumps(nothing))


def test_statements_apply_in_order_and_never_twice(keys: dict[str, Key]) -> None:
    """A trap away for two rotations: the old key adds the new, the new revokes the old."""
    start = _keyring(keys["old"])
    first = sign_rotation(keys["old"].private, 1, add=[keys["new"].pub()])
    second = sign_rotation(keys["new"].private, 2, revoke=[keys["old"].id])
    result = apply_statements(start, 0, None, [first, second])
    assert [s.sequence for s in result.applied] == [1, 2] and not result.refused
    assert set(result.keyring.keys) == {keys["new"].id}
    assert (result.sequence, result.digest) == (2, statement_digest(second))
    # the retained command again: nothing to do, nothing to report
    again = apply_statements(result.keyring, 2, result.digest, [first, second])
    assert not again.applied and not again.refused
    # replayed: an older list, or another statement under the applied number
    older = apply_statements(result.keyring, 2, result.digest, [first])
    assert older.refused and "replayed or stale" in older.refused[0][1] and not older.applied
    other = sign_rotation(keys["new"].private, 2, add=[keys["backup"].pub()])
    reused = apply_statements(result.keyring, 2, result.digest, [first, other])
    assert "used once" in reused.refused[0][1] and set(reused.keyring.keys) == {keys["new"].id}


def test_a_bad_statement_in_the_list_changes_nothing_and_the_rest_still_apply(keys: dict[str, Key]) -> None:
    start = _keyring(keys["old"])
    forged = sign_rotation(keys["stranger"].private, 1, add=[keys["stranger"].pub()])
    good = sign_rotation(keys["old"].private, 2, add=[keys["new"].pub()])
    result = apply_statements(start, 0, None, [forged, good])
    assert [seq for seq, _ in result.refused] == [1] and [s.sequence for s in result.applied] == [2]
    assert set(result.keyring.keys) == {keys["old"].id, keys["new"].id}


def test_a_trap_provisioned_after_a_rotation_passes_over_what_is_in_effect(keys: dict[str, Key]) -> None:
    """Provisioned with the rotated keyring: the first statement (by the old key, now gone) is
    already in effect, so it is neither applied nor reported as refused."""
    first = sign_rotation(keys["old"].private, 1, add=[keys["new"].pub()], revoke=[keys["backup"].id])
    second = sign_rotation(keys["new"].private, 2, add=[keys["backup"].pub()], revoke=[keys["old"].id])
    result = apply_statements(_keyring(keys["new"]), 0, None, [first, second])
    assert result.in_effect == [1] and not result.refused and result.sequence == 2
    assert set(result.keyring.keys) == {keys["new"].id, keys["backup"].id}


def test_a_command_lists_statements_in_growing_order(keys: dict[str, Key]) -> None:
    first = sign_rotation(keys["old"].private, 1, add=[keys["new"].pub()])
    second = sign_rotation(keys["new"].private, 2, revoke=[keys["old"].id])
    with pytest.raises(ValidationError, match="growing sequence order"):
        KeysCommand(statements=[second, first])
    with pytest.raises(ValidationError, match="growing sequence order"):
        KeysCommand(statements=[first, first])


def test_the_signature_must_be_an_ed25519_signature(keys: dict[str, Key]) -> None:
    statement = sign_rotation(keys["old"].private, 1, add=[keys["new"].pub()])
    for bad in ("x" * 88, base64.b64encode(b"\0" * 10).decode()):
        with pytest.raises(ValidationError):
            _tampered(statement, signature=bad)


def test_ota_reports_keep_their_old_shape_without_key_fields() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    plain = json.loads(OtaProgress(ts=now, stage="installed", release_id=2, version="2").to_json())
    assert "key_sequence" not in plain and "trusted_keys" not in plain
    keyed = OtaProgress(ts=now, stage="keys_applied", key_sequence=3, trusted_keys=["0123456789abcdef"])
    assert parse_payload("ota", keyed.to_json()) == keyed
