from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trapline.keyring import Keyring, KeyringError, generate_keys, install_public_key, key_id, public_pem


def test_a_keyring_folder_verifies_with_the_named_key_or_any(tmp_path: Path) -> None:
    first = generate_keys(tmp_path / "a.key", tmp_path / "a.pub")
    second = generate_keys(tmp_path / "b.key", tmp_path / "b.pub")
    ring = tmp_path / "ring"
    assert install_public_key(ring, (tmp_path / "a.pub").read_bytes()) == first
    assert install_public_key(ring, (tmp_path / "b.pub").read_bytes()) == second
    keyring = Keyring.load(ring)
    assert set(keyring.keys) == {first, second}
    from trapline.keyring import read_private_key

    signature = read_private_key(tmp_path / "b.key").sign(b"body")
    assert keyring.verify(signature, b"body") == second
    assert keyring.verify(signature, b"body", second) == second
    with pytest.raises(KeyringError, match="does not verify"):
        keyring.verify(signature, b"body", first)  # named another trusted key: that one only
    with pytest.raises(KeyringError, match="not in"):
        keyring.verify(signature, b"body", "0" * 16)
    with pytest.raises(KeyringError):
        keyring.verify(signature, b"other body")


def test_a_file_name_cannot_lie_about_its_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate().public_key()
    ring = tmp_path / "ring"
    ring.mkdir()
    (ring / "0123456789abcdef.pub").write_bytes(public_pem(key))
    with pytest.raises(KeyringError, match=f"holds key {key_id(key)}"):
        Keyring.load(ring)


def test_an_empty_or_missing_keyring_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyringError, match="no keys"):
        Keyring.load(tmp_path / "empty")
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "missing.pub")


def test_the_private_key_is_private(tmp_path: Path) -> None:
    generate_keys(tmp_path / "k.key", tmp_path / "k.pub")
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
