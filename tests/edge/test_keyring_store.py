"""The trap's trusted keyring on disk: seeded from the provisioned one, replaced whole, and valid
after a power cut at any moment of a write (kill -9 in each phase); the cmd/keys handler applies
statements to it and reports what it did or refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trapline.contracts import KeysCommand, parse_payload
from trapline.edge.config import AgentConfig
from trapline.edge.key_rotation import KeyRotationHandler
from trapline.edge.keyring_store import (
    CRASH_AT_ENV,
    KEY_PHASES,
    AppliedRecord,
    KeyringStore,
    trust_dir,
    trusted_keyring,
)
from trapline.key_rotation import sign_rotation
from trapline.keyring import Keyring, generate_keys, install_public_key, read_public_key


def _key(folder: Path, name: str) -> tuple[str, Path, Path]:
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    return generate_keys(private, public), private, public


@pytest.fixture
def provisioned(tmp_path: Path) -> Path:
    """/etc/trapline/keyring as provisioning writes it: the fleet's key `old`."""
    keys = tmp_path / "keys"
    _key(keys, "old")
    ring = tmp_path / "etc-keyring"
    install_public_key(ring, (keys / "old.pub").read_bytes())
    return ring


def _pub(keys: Path, name: str) -> Any:
    return read_public_key((keys / f"{name}.pub").read_bytes(), name)


def _folders(store: KeyringStore) -> list[str]:
    return sorted(p.name for p in store.folder.iterdir() if p.name.startswith("keyring-"))


def test_seeded_once_from_the_provisioned_keyring(tmp_path: Path, provisioned: Path) -> None:
    store = KeyringStore(tmp_path / "trust")
    store.seed(provisioned)
    keyring, record = store.current()
    assert set(keyring.keys) == set(Keyring.load(provisioned).keys)
    assert record.sequence == 0 and record.seeded_from == str(provisioned)
    assert store.path.is_symlink() and not os.readlink(store.path).startswith("/")
    before = os.readlink(store.path)
    store.seed(provisioned)  # every start: nothing changed, nothing written
    assert os.readlink(store.path) == before and _folders(store) == [before]


def test_provisioning_again_changes_the_seed_until_a_statement_is_applied(
    tmp_path: Path, provisioned: Path
) -> None:
    keys = tmp_path / "keys"
    new_id, _, new_pub = _key(keys, "new")
    store = KeyringStore(tmp_path / "trust")
    store.seed(provisioned)
    install_public_key(provisioned, new_pub.read_bytes())  # a technician re-provisions the trap
    store.seed(provisioned)
    assert new_id in store.current()[0].keys
    statement = sign_rotation(keys / "old.key", 1, revoke=[new_id])
    keyring, _ = store.current()
    store.write(Keyring({k: v for k, v in keyring.keys.items() if k != new_id}), AppliedRecord(1))
    (provisioned / f"{new_id}.pub").unlink()
    install_public_key(provisioned, new_pub.read_bytes())
    store.seed(provisioned)  # a statement was applied: the rotated keyring rules
    assert new_id not in store.current()[0].keys and store.current()[1].sequence == statement.sequence


def test_a_write_replaces_the_whole_keyring_and_tidies_up(tmp_path: Path, provisioned: Path) -> None:
    keys = tmp_path / "keys"
    new_id, _, _ = _key(keys, "new")
    store = KeyringStore(tmp_path / "trust")
    store.seed(provisioned)
    first = os.readlink(store.path)
    store.write(Keyring({new_id: _pub(keys, "new")}), AppliedRecord(1, "d" * 64, "0" * 16))
    keyring, record = store.current()
    assert set(keyring.keys) == {new_id} and record.sequence == 1 and record.digest == "d" * 64
    assert first in _folders(store)  # kept until the next write: a load may be reading it
    store.write(Keyring({new_id: _pub(keys, "new")}), AppliedRecord(2))
    assert first not in _folders(store) and len(_folders(store)) == 2


@pytest.mark.parametrize("phase", KEY_PHASES)
def test_an_interrupted_write_keeps_a_valid_keyring(tmp_path: Path, provisioned: Path, phase: str) -> None:
    """A write that fails in a phase (a full disk, an I/O error): the keyring before or after, whole."""
    keys = tmp_path / "keys"
    new_id, _, _ = _key(keys, "new")
    old = set(Keyring.load(provisioned).keys)

    def fail(at: str) -> None:
        if at == phase:
            raise OSError(28, "No space left on device")

    KeyringStore(tmp_path / "trust").seed(provisioned)
    store = KeyringStore(tmp_path / "trust", fault=fail)
    with pytest.raises(OSError, match="No space"):
        store.write(Keyring({new_id: _pub(keys, "new")}), AppliedRecord(1))
    keyring, record = KeyringStore(tmp_path / "trust").current()
    swapped = phase == "keys-swapped"
    assert (set(keyring.keys), record.sequence) == (({new_id}, 1) if swapped else (old, 0))
    assert len(_folders(store)) == (2 if swapped else 1)  # nothing half-written left behind


_WRITER = """
import sys
from pathlib import Path
from trapline.edge.keyring_store import AppliedRecord, KeyringStore
from trapline.keyring import Keyring
store = KeyringStore(Path(sys.argv[1]))
store.write(Keyring.load(Path(sys.argv[2])), AppliedRecord(1, signer="0" * 16))
"""


def test_kill_9_in_every_phase_of_a_write_leaves_a_valid_keyring(tmp_path: Path, provisioned: Path) -> None:
    """A process killed (SIGKILL, as a power cut stops it) in each phase of a write: the next start
    finds the old keyring or the new one, complete with its sequence, and clears the rest."""
    keys = tmp_path / "keys"
    new_ring = tmp_path / "new-ring"
    for name in ("new", "other"):
        install_public_key(new_ring, _key(keys, name)[2].read_bytes())
    old, new = set(Keyring.load(provisioned).keys), set(Keyring.load(new_ring).keys)
    for phase in KEY_PHASES:
        trust = tmp_path / f"trust-{phase}"
        KeyringStore(trust).seed(provisioned)
        env = {**os.environ, CRASH_AT_ENV: phase}
        done = subprocess.run(
            [sys.executable, "-c", _WRITER, str(trust), str(new_ring)], env=env, capture_output=True, check=False
        )  # fmt: skip
        assert done.returncode == -signal.SIGKILL, (phase, done.stderr.decode()[-2000:])
        keyring, record = KeyringStore(trust).current()
        expected = (new, 1) if phase == "keys-swapped" else (old, 0)
        assert (set(keyring.keys), record.sequence) == expected, phase
        store = KeyringStore(trust)
        store.seed(provisioned)  # what the agent does at start: the rotated keyring stays if it won
        assert store.current()[1].sequence == expected[1], phase
        assert _folders(store) == [os.readlink(store.path)], phase  # leftovers removed
    # and without a kill the same write completes
    trust = tmp_path / "trust-clean"
    KeyringStore(trust).seed(provisioned)
    subprocess.run([sys.executable, "-c", _WRITER, str(trust), str(new_ring)], check=True)
    assert set(KeyringStore(trust).current()[0].keys) == new


def test_the_trusted_keyring_is_the_rotated_one_once_seeded(tmp_path: Path, provisioned: Path) -> None:
    config = AgentConfig.model_validate(
        {
            "device_id": "trap-07",
            "source": {"type": "folder", "path": str(tmp_path / "in")},
            "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
            "model": {"keyring": str(provisioned)},
        }
    )
    assert trust_dir(config) == tmp_path / "state" / "trust"
    assert trusted_keyring(config) == provisioned  # not seeded yet
    KeyringStore(trust_dir(config)).seed(provisioned)
    assert trusted_keyring(config) == tmp_path / "state" / "trust" / "keyring"
    off = config.model_copy(update={"keys": config.keys.model_copy(update={"rotation": False})})
    assert trusted_keyring(off) == provisioned


# --- the cmd/keys handler ------------------------------------------------------------------------
class Reports(list[dict[str, Any]]):
    def __call__(self, payload: bytes) -> None:
        self.append(parse_payload("ota", payload).model_dump(mode="json"))


def _command(*statements: Any) -> KeysCommand:
    return KeysCommand(statements=list(statements))


def test_the_handler_applies_reports_and_refuses(tmp_path: Path, provisioned: Path) -> None:
    keys = tmp_path / "keys"
    old_id = next(iter(Keyring.load(provisioned).keys))
    new_id, _, _ = _key(keys, "new")
    stranger_id, _, _ = _key(keys, "stranger")
    store = KeyringStore(tmp_path / "trust")
    store.seed(provisioned)
    reports, changes = Reports(), []
    handler = KeyRotationHandler(store, reports, lambda: changes.append(1))

    add_new = sign_rotation(keys / "old.key", 1, add=[_pub(keys, "new")])
    handler.on_command(_command(add_new))
    assert set(store.current()[0].keys) == {old_id, new_id} and changes == [1]
    assert reports[-1]["stage"] == "keys_applied" and reports[-1]["key_sequence"] == 1
    assert reports[-1]["trusted_keys"] == sorted([old_id, new_id])

    handler.on_command(_command(add_new))  # the retained command after a reconnect: silence
    assert len(reports) == 1

    forged = sign_rotation(keys / "stranger.key", 2, add=[_pub(keys, "stranger")])
    handler.on_command(_command(add_new, forged))
    assert reports[-1]["stage"] == "keys_refused" and reports[-1]["key_sequence"] == 2
    assert f"signed by key {stranger_id}, which is not trusted" in reports[-1]["reason"]
    assert stranger_id not in store.current()[0].keys and store.current()[1].sequence == 1

    revoke_old = sign_rotation(keys / "new.key", 3, revoke=[old_id])
    handler.on_command(_command(add_new, revoke_old))
    assert set(store.current()[0].keys) == {new_id} and store.current()[1].sequence == 3
    handler.on_command(_command(add_new))  # replayed: older than what was applied
    assert reports[-1]["stage"] == "keys_refused" and "replayed or stale" in reports[-1]["reason"]

    handler.command_error("malformed cmd/keys command: statements: ...")
    assert reports[-1] == {**reports[-1], "stage": "keys_refused", "key_sequence": None}
    handler.on_command(None)  # cleared: the keyring stays
    assert set(store.current()[0].keys) == {new_id}


def test_a_keyring_that_cannot_be_written_changes_nothing(tmp_path: Path, provisioned: Path) -> None:
    keys = tmp_path / "keys"
    _key(keys, "new")

    def full(phase: str) -> None:
        if phase == "keys-swapping":
            raise OSError(28, "No space left on device")

    KeyringStore(tmp_path / "trust").seed(provisioned)
    store = KeyringStore(tmp_path / "trust", fault=full)
    reports = Reports()
    handler = KeyRotationHandler(store, reports)
    handler.on_command(_command(sign_rotation(keys / "old.key", 1, add=[_pub(keys, "new")])))
    assert reports[-1]["stage"] == "keys_refused" and "could not write" in reports[-1]["reason"]
    assert store.current()[1].sequence == 0
    record = json.loads((store.path / "applied.json").read_text())
    assert record["sequence"] == 0
