"""Two model slots (A/B) beside the model the trap was set up with, and the one file that says
which of them runs.

    <state_dir>/state.json      active / previous slot, the trial of a new model, refused releases
    <state_dir>/slots/a, b      verified bundles (unpacked)
    <state_dir>/staging         a bundle being unpacked (never loaded)
    <state_dir>/downloads       the download in progress (<sha256>.part)

`base` is the model of the agent's config (the packaged bundle unless provisioned otherwise): it
is always there, so a trap whose slots are both unusable still runs. state.json is replaced
atomically (temp file, fsync, rename), and only after a slot is complete and verified, so a power
cut at any moment leaves it naming a model that was verified, and every model is verified again
when it is loaded.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trapline.bundle import unpack_bundle, verify_bundle
from trapline.files import atomic_write
from trapline.keyring import Keyring
from trapline.manifest import ModelManifest

log = logging.getLogger(__name__)

Slot = Literal["base", "a", "b"]
BASE: Final = "base"
SLOTS: Final = ("a", "b")
MAX_REFUSED = 32


class SlotInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: int | None = None
    name: str
    version: str
    archive_sha256: str
    model_sha256: str
    installed_at: str


class Trial(BaseModel):
    """A model that has been switched to but not yet kept."""

    model_config = ConfigDict(extra="forbid")

    slot: Literal["a", "b"]
    release_id: int | None = None
    version: str
    since: str
    crashes: int = 0  # agent starts inside the trial that followed an unclean exit
    running: bool = True  # an agent is running it now (False after a clean stop)
    baseline_frame_ms: float | None = None  # the old model's mean, to judge "keeps up"


class Refusal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: int | None = None
    stage: str
    reason: str
    agent_version: str | None = None


class SlotState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: Slot = BASE
    previous: Slot | None = None
    slots: dict[str, SlotInfo] = Field(default_factory=dict)
    trial: Trial | None = None
    refused: dict[str, Refusal] = Field(default_factory=dict)  # archive sha256 -> why


def installed_slot(state_dir: Path) -> Path | None:
    """The slot an agent would start with (read only: safe beside a running agent); None for base."""
    try:
        state = SlotState.model_validate_json((state_dir / "state.json").read_bytes())
    except (OSError, ValidationError):
        return None
    return None if state.active == BASE else state_dir / "slots" / state.active


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SlotStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.json"
        self.downloads = state_dir / "downloads"
        self.staging = state_dir / "staging"
        for folder in (state_dir, state_dir / "slots", self.downloads):
            folder.mkdir(parents=True, exist_ok=True)
        self.state = self._load()
        # an unpack that a power cut interrupted: never loaded, just removed
        shutil.rmtree(self.staging, ignore_errors=True)

    def _load(self) -> SlotState:
        if not self.file.exists():
            return SlotState()
        try:
            return SlotState.model_validate_json(self.file.read_bytes())
        except (OSError, ValidationError) as exc:
            # cannot happen through atomic writes; if the card is damaged, the base model is safe
            log.error("model state %s is unreadable (%s): starting from the base model", self.file, exc)
            return SlotState()

    def save(self) -> None:
        atomic_write(self.file, self.state.model_dump_json(indent=1).encode())

    # --- what runs --------------------------------------------------------------------------------
    def path(self, slot: str) -> Path:
        return self.dir / "slots" / slot

    def candidates(self) -> list[Slot]:
        """The slots to try loading at start, best first; `base` always last."""
        order: list[Slot] = [self.state.active]
        if self.state.previous is not None:
            order.append(self.state.previous)
        order.append(BASE)
        return list(dict.fromkeys(order))

    def inactive(self) -> Literal["a", "b"]:
        """The slot a new release goes into: never the running one."""
        return "b" if self.state.active == "a" else "a"

    def info(self, slot: str) -> SlotInfo | None:
        return self.state.slots.get(slot)

    # --- installing -------------------------------------------------------------------------------
    def clear(self, slot: Literal["a", "b"]) -> None:
        """Forget and delete `slot` (it must not be the active one) before installing into it."""
        if slot == self.state.active:
            raise ValueError(f"slot {slot} is running")
        if self.state.previous == slot:
            self.state.previous = None
        self.state.slots.pop(slot, None)
        self.save()  # first forget it, then delete it: the state never names a half-deleted slot
        shutil.rmtree(self.path(slot), ignore_errors=True)

    def install(
        self,
        archive: Path,
        slot: Literal["a", "b"],
        keyring: Keyring,
        before_commit: Callable[[], None] | None = None,
    ) -> ModelManifest:
        """Unpack `archive` into `slot` (cleared first) and verify it there; BundleError if it is
        tampered or signed by an unknown key, OSError (e.g. disk full) with nothing left behind."""
        self.clear(slot)
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            unpack_bundle(archive.read_bytes(), self.staging)
            manifest = verify_bundle(self.staging, keyring)
            if before_commit is not None:
                before_commit()  # the power-loss tests cut here
            os.replace(self.staging, self.path(slot))
            _fsync_dir(self.path(slot).parent)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return manifest

    # --- switching, keeping, going back -------------------------------------------------------------
    def switch(self, slot: Literal["a", "b"], info: SlotInfo, baseline_frame_ms: float | None) -> None:
        """Run `slot` from now on, on trial; the running model becomes the previous one."""
        self.state.previous = self.state.active
        self.state.active = slot
        self.state.slots[slot] = info
        self.state.trial = Trial(
            slot=slot,
            release_id=info.release_id,
            version=info.version,
            since=datetime.now(UTC).isoformat(timespec="seconds"),
            baseline_frame_ms=baseline_frame_ms,
        )
        self.save()

    def keep(self) -> None:
        """The trial passed: the new model stays; the previous one stays too, for a later rollback."""
        self.state.trial = None
        self.save()

    def go_back(self) -> Slot:
        """Make the previous model (or the base model) active again; returns it."""
        failed = self.state.active
        target: Slot = self.state.previous or BASE
        if target == failed:
            target = BASE
        self.state.active = target
        self.state.previous = None
        self.state.trial = None
        if failed != BASE:
            self.state.slots.pop(failed, None)
        self.save()
        return target

    def fall_back_to(self, slot: Slot) -> None:
        """`slot` is what actually loaded at start (the active one did not)."""
        broken = self.state.active
        self.state.active = slot
        if self.state.previous in (slot, broken):
            self.state.previous = None
        self.state.trial = None
        if broken != BASE:
            self.state.slots.pop(broken, None)
        self.save()

    def note_start(self, max_crashes: int) -> str | None:
        """Called once at every agent start. Inside a trial, an earlier unclean exit counts as a
        crash of the new model; past `max_crashes` the trap goes back. Returns why, if it did."""
        trial = self.state.trial
        if trial is None:
            return None
        if trial.running:
            trial.crashes += 1
        trial.running = True
        if trial.crashes > max_crashes:
            reason = f"v{trial.version} crashed the agent {trial.crashes} times inside its health window"
            self.go_back()
            return reason
        self.save()
        return None

    def note_clean_stop(self) -> None:
        if self.state.trial is not None:
            self.state.trial.running = False
            self.save()

    # --- releases the trap will not install ----------------------------------------------------------
    def refuse(
        self, archive_sha256: str, release_id: int | None, stage: str, reason: str, agent_version: str
    ) -> None:
        refused = self.state.refused
        refused[archive_sha256] = Refusal(
            release_id=release_id, stage=stage, reason=reason[:500], agent_version=agent_version
        )
        while len(refused) > MAX_REFUSED:
            refused.pop(next(iter(refused)))
        self.save()

    def refusal(self, archive_sha256: str) -> Refusal | None:
        return self.state.refused.get(archive_sha256)
