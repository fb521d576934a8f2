"""Trusted release keys: what a trap checks bundle signatures against.

A keyring is a folder of Ed25519 public keys (PEM), one file per key, named `<key id>.pub`. The key
id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key, so a file name cannot
lie about the key inside it (loading checks). A bundle's manifest names the id of the key that
signed it. A single `.pub` file is accepted where a keyring is expected (a keyring of one key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trapline.contracts import raw_key_id
from trapline.files import atomic_write

PUBLIC_SUFFIX = ".pub"


class KeyringError(ValueError):
    """A key cannot be read, or a signature verifies with no trusted key."""


def raw_public_key(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return raw_key_id(raw_public_key(public))


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def read_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyringError(f"{where}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyringError(f"{where} is not an Ed25519 public key")
    return key


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise KeyringError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyringError(f"{path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class Keyring:
    keys: Mapping[str, Ed25519PublicKey]
    source: str = "(memory)"

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """Every `<key id>.pub` in a folder, or the one key of a `.pub` file."""
        try:
            files = sorted(path.glob(f"*{PUBLIC_SUFFIX}")) if path.is_dir() else [path]
            keys: dict[str, Ed25519PublicKey] = {}
            for file in files:
                key = read_public_key(file.read_bytes(), str(file))
                identity = key_id(key)
                if path.is_dir() and file.stem != identity:
                    raise KeyringError(f"{file}: holds key {identity}, not {file.stem}")
                keys[identity] = key
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {path}: {exc}") from exc
        if not keys:
            raise KeyringError(f"keyring {path} holds no keys")
        return cls(keys, str(path))

    def verify(self, signature: bytes, body: bytes, signer: str | None = None) -> str:
        """The id of the trusted key that made `signature` over `body`; KeyringError otherwise.

        With `signer` (the key id a manifest names) only that key is tried."""
        if signer is None:
            candidates = dict(self.keys)
        else:
            candidates = {signer: self.keys[signer]} if signer in self.keys else {}
        for identity, key in candidates.items():
            try:
                key.verify(signature, body)
            except InvalidSignature:
                continue
            return str(identity)
        named = (
            f" (signed by key {signer}, not in {self.source})" if signer and signer not in self.keys else ""
        )
        raise KeyringError(f"signature does not verify with any trusted key{named}")


def install_public_key(folder: Path, pem: bytes) -> str:
    """Add a public key to a keyring folder (atomically); returns its id."""
    key = read_public_key(pem, "new key")
    identity = key_id(key)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{identity}{PUBLIC_SUFFIX}", public_pem(key))
    return identity


def generate_keys(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair: private key PEM (mode 0600), public key PEM; returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(private_path, pem, 0o600)
    atomic_write(public_path, public_pem(key.public_key()))
    return key_id(key.public_key())
