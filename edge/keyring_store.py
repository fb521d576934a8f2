"""The keyring a trap trusts now, kept on disk and only ever replaced whole.

    <state_dir>/keyring                  a symbolic link to the current folder: what every load reads
    <state_dir>/keyring-<random>/        the keys, `<key id>.pub` each (trapline/keyring.py), and
        applied.json                     the last statement applied: sequence, digest, signer

Provisioning installs the fleet's keyring read-only at /etc/trapline/keyring; the agent's sandbox
lets it write only its state folder, so the keyring that key rotation changes lives there, seeded
from the provisioned one at the first start (`seed`).

A new keyring goes into a folder of its own beside the current one, every file and the folder
fsynced; then a new link replaces the old by rename (atomic) and the parent folder is fsynced. A
power cut at any moment leaves the link naming a complete keyring, the old one or the new one, and
the sequence of the last applied statement lives inside it, so keys and sequence change together.
A folder the link does not name is what an interrupted write left (or the keyring before the last
one): removed at the next start or write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trapline.contracts import iso, utc_now
from trapline.files import fsync_dir, write_synced
from trapline.keyring import PUBLIC_SUFFIX, Keyring, KeyringError, public_pem, raw_public_key

if TYPE_CHECKING:  # the config pulls in the inference runtimes; the store needs none of them
    from trapline.edge.config import AgentConfig

log = logging.getLogger(__name__)

LINK_NAME = "keyring"
FOLDER_PREFIX = "keyring-"
RECORD_NAME = "applied.json"
_NEW_LINK = ".keyring.new"
# Fault injection for the power-loss tests: the agent SIGKILLs itself on reaching this phase.
CRASH_AT_ENV = "TRAPLINE_KEYS_CRASH_AT"
KEY_PHASES = (
    "keys-writing",  # one key of the new folder written
    "keys-swapping",  # the new folder complete and synced; the link still names the old one
    "keys-swapped",  # the link renamed onto the new folder; the parent not yet synced
)

FaultHook = Callable[[str], None]


def crash_point(phase: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == phase:
        log.warning("%s=%s: killing the agent here (power-loss test)", CRASH_AT_ENV, phase)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class AppliedRecord:
    """Which statement the keyring beside this record comes from (sequence 0: the seed)."""

    sequence: int
    digest: str | None = None
    signer: str | None = None
    written_at: str | None = None
    seeded_from: str | None = None

    @classmethod
    def read(cls, path: Path) -> AppliedRecord:
        try:
            body = json.loads(path.read_bytes())
            record = cls(**body)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyringError(f"cannot read {path}: {exc}") from exc
        if not isinstance(record.sequence, int) or record.sequence < 0:
            raise KeyringError(f"{path}: sequence {record.sequence!r} is not a sequence number")
        return record


def trust_dir(config: AgentConfig) -> Path:
    return config.keys.state_dir or config.spool.path.parent / "trust"


def trusted_keyring(config: AgentConfig) -> Path:
    """The keyring that verifies bundles, grants and statements now: the rotated one once the agent
    has seeded it, else the provisioned `model.keyring` (rotation off, or before the first start)."""
    if config.keys.rotation:
        link = trust_dir(config) / LINK_NAME
        if link.exists():  # follows the link: a dangling one does not count
            return link
    return config.model.keyring


def _raw_keys(keyring: Keyring) -> dict[str, bytes]:
    return {identity: raw_public_key(key) for identity, key in keyring.keys.items()}


def _same_keys(a: Keyring, b: Keyring) -> bool:
    return _raw_keys(a) == _raw_keys(b)


class KeyringStore:
    def __init__(self, folder: Path, fault: FaultHook = crash_point) -> None:
        self.folder = folder
        self.fault = fault

    @property
    def path(self) -> Path:
        """The link every load reads; after a write it names the new keyring."""
        return self.folder / LINK_NAME

    def current(self) -> tuple[Keyring, AppliedRecord]:
        """The trusted keyring and the statement it comes from; KeyringError if there is none."""
        keyring = Keyring.load(self.path)
        return keyring, AppliedRecord.read(self.path / RECORD_NAME)

    def seed(self, provisioned: Path) -> None:
        """Make sure there is a trusted keyring: the provisioned one, at the first start and while
        no statement has been applied (a trap provisioned again gets the keys it was given);
        once a statement has been applied, the rotated keyring rules."""
        self.tidy()
        try:
            current: tuple[Keyring, AppliedRecord] | None = self.current()
        except KeyringError as exc:
            current = None
            if os.path.lexists(self.path):
                log.error("the trusted keyring %s is damaged (%s): seeding it again", self.path, exc)
        try:
            seed = Keyring.load(provisioned)
        except KeyringError as exc:
            if current is None:
                log.error("cannot seed the trusted keyring: %s", exc)
            return
        if current is not None:
            keyring, record = current
            if record.sequence > 0:
                if not _same_keys(keyring, seed):
                    log.info(
                        "trusting keys %s (statement %d), not the provisioned %s",
                        ", ".join(sorted(keyring.keys)),
                        record.sequence,
                        provisioned,
                    )
                return
            if _same_keys(keyring, seed):
                return
            log.info("the provisioned keyring %s changed: trusting its keys now", provisioned)
        try:
            self.write(seed, AppliedRecord(0, written_at=iso(utc_now()), seeded_from=str(provisioned)))
        except OSError as exc:  # a full disk: the agent still starts, on the keyring it had
            log.error("cannot seed the trusted keyring in %s: %s", self.folder, exc)
            return
        log.info("trusted keyring seeded from %s: %s", provisioned, ", ".join(sorted(seed.keys)))

    def write(self, keyring: Keyring, record: AppliedRecord) -> None:
        """Replace the trusted keyring (and its record) in one step that a power cut cannot split."""
        if not keyring.keys:
            raise KeyringError("refusing to write an empty keyring")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tidy()
        new = Path(tempfile.mkdtemp(dir=self.folder, prefix=FOLDER_PREFIX))
        try:
            for number, (identity, key) in enumerate(sorted(keyring.keys.items())):
                write_synced(new / f"{identity}{PUBLIC_SUFFIX}", public_pem(key))
                if number == 0:
                    self.fault("keys-writing")
            write_synced(new / RECORD_NAME, (json.dumps(asdict(record), indent=1) + "\n").encode())
            new.chmod(0o750)
            fsync_dir(new)
            self.fault("keys-swapping")
            link = self.folder / _NEW_LINK
            if os.path.lexists(link):
                link.unlink()
            link.symlink_to(new.name)  # relative: the state folder may be moved as a whole
            os.replace(link, self.path)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        self.fault("keys-swapped")
        fsync_dir(self.folder)

    def tidy(self) -> None:
        """Remove what interrupted writes left, and older keyrings. The one the link names stays;
        so does, until the next write or start, the one it replaced (a load may still read it)."""
        if not self.folder.is_dir():
            return
        target = os.readlink(self.path) if self.path.is_symlink() else None
        for entry in self.folder.iterdir():
            if entry.name == _NEW_LINK:
                entry.unlink(missing_ok=True)
            elif entry.name.startswith(FOLDER_PREFIX) and entry.name != target:
                shutil.rmtree(entry, ignore_errors=True)
