"""The trap's side of a model release, from the retained `cmd/model` command to a kept model.

    received -> waiting (window, spread) -> downloading -> verifying -> installing -> testing
             -> switched (health window) -> installed
    or: retrying / failed (network, disk), refused (tampered, downgrade, incompatible),
        rolled_back (self-test, crashes, too slow)

One thread reconciles what runs with the desired release, one step at a time, and reports every
step on `ota` through the spool (so reports survive an outage or a restart). The frame loop
holds `model_lock` while it processes a frame; the switch takes the same lock, so it happens
between two frames and none is lost. Until the health window has passed, the old detector stays
in memory, and going back is another swap under the lock.

Whatever is killed when, the trap restarts on a verified model: `SlotStore` names a slot only once
it is complete and verified, every model is verified again when loaded, and the retained command
makes the restarted agent carry on (a partial download resumes).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from trapline.bundle import BundleError
from trapline.contracts import (
    ModelCommand,
    ModelRef,
    OtaProgress,
    OtaStage,
    RollbackGrant,
    TopicKind,
    utc_now,
    version_key,
)
from trapline.credentials import reveal
from trapline.edge.backends import BACKENDS, ModelLoadError
from trapline.edge.config import AgentConfig
from trapline.edge.detector import Detector
from trapline.edge.keyring_store import trusted_keyring
from trapline.edge.ota.download import DiskFullError, DownloadError, download
from trapline.edge.ota.selftest import run_self_test
from trapline.edge.ota.slots import BASE, SlotInfo, SlotStore, installed_slot
from trapline.edge.ota.window import current_reason
from trapline.formats import MODEL_FORMATS
from trapline.keyring import Keyring, KeyringError
from trapline.manifest import ModelManifest
from trapline.model_source import resolve_model
from trapline.rollback import verify_rollback

log = logging.getLogger(__name__)

# Fault injection for the power-loss tests: the agent SIGKILLs itself on entering this phase.
CRASH_AT_ENV = "TRAPLINE_OTA_CRASH_AT"
PHASES = ("downloading", "verifying", "installing", "testing", "switching", "confirming")
MIN_FRAMES_TO_JUDGE = 5
WINDOW_CHECK_S = 60.0
_BASELINE_FRAMES = 50


def crash_point(phase: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == phase:
        log.warning("%s=%s: killing the agent here (power-loss test)", CRASH_AT_ENV, phase)
        os.kill(os.getpid(), signal.SIGKILL)


class UpdateHost(Protocol):
    """What the updater needs from the agent."""

    detector: Detector

    def spool_ota(self, payload: bytes) -> None:
        """Queue an `ota` report (durably) for the broker."""

    def frame_times(self) -> tuple[int, list[float]]:
        """Frames processed so far, and the milliseconds of the latest ones (oldest first)."""

    def model_switched(self) -> None:
        """`detector` was replaced: refresh what depends on it (status, burst categories)."""


class _Refused(Exception):
    def __init__(self, stage: Literal["refused", "rolled_back"], reason: str) -> None:
        super().__init__(reason)
        self.stage: Literal["refused", "rolled_back"] = stage
        self.reason = reason
        # remembered (state.json) so a downloaded bundle is not fetched again after a restart
        self.remember = True


class _Transient(Exception):
    """Worth another attempt later (network, server, disk space)."""


class _NotYet(Exception):
    """Outside the update window, or the download delay has not passed."""

    def __init__(self, reason: str, retry_in_s: float) -> None:
        super().__init__(reason)
        self.retry_in_s = retry_in_s


class _Superseded(Exception):
    """The desired release changed (or the agent is stopping) while this one was in progress."""


@dataclass
class _Watch:
    """A switched model inside its health window."""

    started: float
    frames_at_switch: int
    baseline_ms: float | None
    old: Detector | None  # None after a restart: the previous model is loaded again if needed
    release_id: int | None
    version: str


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def state_dir_of(config: AgentConfig) -> Path:
    return config.ota.state_dir or config.spool.path.parent / "models"


def load_installed(config: AgentConfig) -> Detector | None:
    """The model an update installed and the agent would start with (verified), if any; for
    `trapline edge check`. Reads the state only."""
    slot = installed_slot(state_dir_of(config))
    if slot is None:
        return None
    model = config.model
    try:
        model_file = resolve_model(slot, trusted_keyring(config))
    except BundleError as exc:
        raise ModelLoadError(f"installed model {slot}: {exc}") from exc
    return Detector(model_file, model.backend, model.threads, model.conf_threshold, model.iou_threshold)


class ModelUpdates:
    def __init__(self, config: AgentConfig, agent_version: str) -> None:
        self.config = config
        self.ota = config.ota
        self.agent_version = agent_version
        # slots are used even with updates disabled: an installed model keeps running
        self.slots = SlotStore(state_dir_of(config))
        self.model_lock = threading.Lock()  # held by the frame loop around every frame
        self.last_switch_ms: float | None = None
        self._lock = threading.Lock()  # guards _desired
        self._desired: ModelCommand | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._host: UpdateHost | None = None
        self._load_base: Callable[[], Detector] | None = None
        self._early_reports: list[bytes] = []
        self._watch: _Watch | None = None
        self._attempts = 0
        self._retry_at = 0.0
        self._gave_up: set[str] = set()
        self._dismissed: set[ModelCommand] = set()
        self._announced: set[tuple[str, str]] = set()
        self._first_seen: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="model-updates", daemon=True)

    # --- start: which model runs ------------------------------------------------------------------
    def boot(self, load_base: Callable[[], Detector]) -> Detector:
        """The detector to start with: the active slot, else the previous one, else the base model
        (`load_base`, the agent's configured model). Going back is reported once the agent runs."""
        self._load_base = load_base
        state = self.slots.state
        trial, trial_info = state.trial, self.slots.info(state.trial.slot) if state.trial else None
        crashed = self.slots.note_start(self.ota.max_trial_crashes)
        if crashed is not None and trial is not None:
            if trial_info is not None:
                self.slots.refuse(
                    trial_info.archive_sha256, trial.release_id, "rolled_back", crashed, self.agent_version
                )
            self._queue("rolled_back", trial.release_id, trial.version, crashed)
        problems: list[str] = []
        for slot in self.slots.candidates():
            if slot == BASE:
                detector = load_base()
            else:
                try:
                    detector = self._load_slot(slot)
                except ModelLoadError as exc:
                    log.error("model slot %s does not load: %s", slot, exc)
                    problems.append(f"slot {slot}: {exc}")
                    continue
            if slot != self.slots.state.active:
                failed = self.slots.state.trial or None
                self.slots.fall_back_to(slot)
                self._queue(
                    "rolled_back",
                    failed.release_id if failed else None,
                    failed.version if failed else None,
                    f"the active model did not load ({'; '.join(problems)}); running {slot}",
                )
            if self.slots.state.trial is not None:
                trial = self.slots.state.trial
                self._watch = _Watch(
                    time.monotonic(), 0, trial.baseline_frame_ms, None, trial.release_id, trial.version
                )
            log.info("running model %s v%s from slot %s", detector.info.name, detector.info.version, slot)
            return detector
        raise AssertionError("unreachable: the base model is always a candidate")

    def _load_slot(self, slot: str) -> Detector:
        model = self.config.model
        try:
            model_file = resolve_model(self.slots.path(slot), trusted_keyring(self.config))
        except BundleError as exc:
            raise ModelLoadError(f"refusing model bundle: {exc}") from exc
        return Detector(model_file, model.backend, model.threads, model.conf_threshold, model.iou_threshold)

    @property
    def host(self) -> UpdateHost:
        if self._host is None:
            raise RuntimeError("model updates have not been started")
        return self._host

    def _base_detector(self) -> Detector:
        if self._load_base is None:
            raise RuntimeError("boot() was not called")
        return self._load_base()

    # --- the downlink's side ----------------------------------------------------------------------
    def handlers(self) -> dict[TopicKind, Callable[[BaseModel | None], None]]:
        return {"cmd/model": self.on_model_command} if self.ota.enabled else {}

    def on_model_command(self, command: BaseModel | None) -> None:
        """A new desired release (None: the server cleared it). Runs on the MQTT thread: quick."""
        if command is not None and not isinstance(command, ModelCommand):
            raise TypeError(f"expected a ModelCommand, got {type(command).__name__}")
        with self._lock:
            if command == self._desired:
                return  # the retained command again, after a reconnect
            self._desired = command
            self._attempts = 0
            self._retry_at = 0.0
        if command is not None:
            log.info("desired model: %s v%s (release %d)", command.name, command.version, command.release_id)
        self._wake.set()

    def keyring_changed(self) -> None:
        """Key rotation changed the trusted keys: a release refused for its key is judged anew."""
        with self._lock:
            self._dismissed.clear()
            self._retry_at = 0.0
        self._wake.set()

    def command_error(self, kind: TopicKind | None, reason: str) -> None:
        """A command that could not be used: reported on `ota` (the trap's answer to commands)."""
        self._report("refused", None, None, reason)

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self, host: UpdateHost) -> None:
        self._host = host
        for payload in self._early_reports:
            self._send(payload)
        self._early_reports.clear()
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The update thread runs (the agent feeds the watchdog only while it does)."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.slots.note_clean_stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._watch is not None:
                    self._check_health(self._watch)
                else:
                    self._step()
            except Exception:  # the updater must never take the agent down
                log.exception("model update step failed")
            busy = self._watch is not None or self._desired is not None
            self._wake.wait(1.0 if busy else 60.0)
            self._wake.clear()

    # --- reconciling the desired release -------------------------------------------------------------
    def _step(self) -> None:
        with self._lock:
            command = self._desired
        if command is None:
            return
        running = self.host.detector.info
        if command.model_sha256 == running.sha256:
            self._once(command, "installed", f"running {running.name} v{running.version}")
            return
        if command in self._dismissed or command.sha256 in self._gave_up or self._refused(command):
            return  # reported when it was refused; the server decides what comes next
        if time.monotonic() < self._retry_at:
            return
        self._once(command, "received", f"release {command.name} v{command.version}")
        try:
            self._apply(command)
            self._attempts = 0
        except _NotYet as wait:
            self._once(command, "waiting", str(wait))
            self._retry_at = time.monotonic() + wait.retry_in_s
        except _Superseded:
            log.info("release %d superseded while in progress", command.release_id)
        except _Refused as refusal:
            log.error("release %d %s: %s", command.release_id, refusal.stage, refusal.reason)
            if refusal.remember:
                self.slots.refuse(
                    command.sha256, command.release_id, refusal.stage, refusal.reason, self.agent_version
                )
            else:
                self._dismissed.add(command)  # a new command (e.g. with a rollback grant) is judged anew
            self._report_command(refusal.stage, command, refusal.reason)
            self._remove_download(command)
        except _Transient as exc:
            self._attempts += 1
            if self._attempts >= self.ota.max_attempts:
                self._gave_up.add(command.sha256)
                self._report_command("failed", command, f"gave up after {self._attempts} attempts: {exc}")
                self._remove_download(command)
                return
            delay = min(self.ota.retry_max_s, self.ota.retry_min_s * 2 ** (self._attempts - 1))
            self._retry_at = time.monotonic() + delay
            self._report_command(
                "retrying",
                command,
                f"{exc} (attempt {self._attempts} of {self.ota.max_attempts}; next in {delay:.0f} s)",
            )

    def _apply(self, command: ModelCommand) -> None:
        running = self.host.detector.info
        keyring = self._keyring()
        try:  # from the command alone, before downloading: cheap, so not remembered across restarts
            self._check_compatible(command.runtime, command.min_agent_version)
            self._check_version(
                command.name, command.version, command.model_sha256, command.rollback, running.ref, keyring
            )
            if command.key_id not in keyring.keys:
                raise _Refused("refused", f"signed by key {command.key_id}, which this trap does not trust")
        except _Refused as refusal:
            refusal.remember = False
            raise
        self._wait_for_window(command)
        part = self._download(command)
        self._report_command("verifying", command, f"archive sha256 matches ({command.size} bytes)")
        crash_point("verifying")
        slot = self.slots.inactive()
        self._report_command("installing", command, f"unpacking into slot {slot}")
        try:
            manifest = self.slots.install(
                part, slot, keyring, before_commit=lambda: crash_point("installing")
            )
        except BundleError as exc:
            raise _Refused("refused", f"the bundle does not verify: {exc}") from exc
        except OSError as exc:
            self._remove_download(command)  # room for the next attempt
            raise _Transient(f"cannot unpack into slot {slot}: {exc}") from exc
        self._remove_download(command)
        try:
            self._check_manifest(command, manifest, running.ref, keyring)
        except _Refused:
            self.slots.clear(slot)
            raise
        self._report_command("testing", command, f"self-test of slot {slot}")
        crash_point("testing")
        try:
            detector = self._load_slot(slot)
            result = run_self_test(detector, self.slots.path(slot), manifest)
        except ModelLoadError as exc:
            self.slots.clear(slot)
            raise _Refused("rolled_back", f"the new model does not load: {exc}") from exc
        if not result.passed:
            self.slots.clear(slot)
            raise _Refused("rolled_back", f"self-test failed: {result.reason}")
        self._ensure_wanted(command)
        self._switch(command, slot, manifest, detector)

    def _refused(self, command: ModelCommand) -> bool:
        refusal = self.slots.refusal(command.sha256)
        # a newer agent may run what an older one could not
        return refusal is not None and refusal.agent_version in (None, self.agent_version)

    def _keyring(self) -> Keyring:
        try:
            return Keyring.load(trusted_keyring(self.config))
        except KeyringError as exc:
            raise _Transient(f"cannot read the keyring: {exc}") from exc

    def _check_compatible(self, runtime: str, min_agent_version: str | None) -> None:
        fmt = next((f for f in MODEL_FORMATS if f.key == runtime), None)
        if fmt is None:
            raise _Refused("refused", f"unknown model format {runtime!r}")
        if not any(BACKENDS[key].available() for key in fmt.backends):
            raise _Refused(
                "refused", f"no runtime for {runtime} models here (install one of {', '.join(fmt.backends)})"
            )
        if min_agent_version is not None:
            needed, ours = version_key(min_agent_version), version_key(self.agent_version)
            if needed is not None and ours is not None and ours < needed:
                raise _Refused(
                    "refused",
                    f"needs agent {min_agent_version} or newer; this trap runs {self.agent_version}",
                )

    def _check_version(
        self,
        name: str,
        version: str,
        model_sha256: str,
        grant: RollbackGrant | None,
        running: ModelRef,
        keyring: Keyring,
    ) -> None:
        """Anti-rollback: an older version only with a grant a trusted key signed for this model."""
        new, current = version_key(version), version_key(running.version)
        if new is None:
            raise _Refused("refused", f"{version!r} is not a release version")
        if current is None or new >= current:
            return
        if grant is None:
            raise _Refused(
                "refused",
                f"v{version} is older than the running v{running.version}"
                " and the release is not a signed rollback",
            )
        try:
            verify_rollback(grant, keyring, name, version, model_sha256)
        except KeyringError as exc:
            raise _Refused("refused", f"the rollback grant for v{version} does not verify: {exc}") from exc

    def _check_manifest(
        self, command: ModelCommand, manifest: ModelManifest, running: ModelRef, keyring: Keyring
    ) -> None:
        """The signed manifest must be what the command announced; its own claims are re-checked."""
        model_sha256 = manifest.files[manifest.model_file]
        announced = (command.name, command.version, command.model_sha256)
        if (manifest.name, manifest.version, model_sha256) != announced:
            raise _Refused(
                "refused",
                f"the bundle holds {manifest.name} v{manifest.version} ({model_sha256[:12]}…), not the"
                f" announced {command.name} v{command.version} ({command.model_sha256[:12]}…)",
            )
        self._check_compatible(manifest.format, manifest.min_agent_version)
        self._check_version(manifest.name, manifest.version, model_sha256, command.rollback, running, keyring)

    def _wait_for_window(self, command: ModelCommand) -> None:
        """_NotYet until the command's download delay has passed and the update window is open."""
        first = self._first_seen.setdefault(command.sha256, time.monotonic())
        remaining = command.download_delay_s - (time.monotonic() - first)
        if remaining > 0:
            raise _NotYet(f"download spread over the fleet: starting in {remaining:.0f} s", remaining)
        # room for the archive and the unpacked bundle
        reason = current_reason(self.ota.window, self.slots.dir, 2 * command.size)
        if reason is not None:
            raise _NotYet(reason, WINDOW_CHECK_S)

    # --- downloading --------------------------------------------------------------------------------
    def _bundle_url(self, command: ModelCommand) -> tuple[str, dict[str, str]]:
        """The absolute URL, and the trap's token when the URL is on its own server."""
        base = self.ota.server_url or self.config.upload.url
        if command.url.startswith("/"):
            if not base:
                missing = _Refused(
                    "refused", "relative bundle URL, and neither ota.server_url nor upload.url"
                )
                missing.remember = False  # the trap's config is at fault, not the release
                raise missing
            url = base.rstrip("/") + command.url
        else:
            url = command.url
        headers: dict[str, str] = {}
        token = reveal(self.config.upload.token())
        if base and token and _origin(url) == _origin(base):
            headers["Authorization"] = f"Bearer {token}"
        return url, headers

    def _download(self, command: ModelCommand) -> Path:
        url, headers = self._bundle_url(command)
        part = self.slots.downloads / f"{command.sha256}.part"
        for stale in self.slots.downloads.glob("*.part"):
            if stale != part:
                stale.unlink(missing_ok=True)  # an abandoned release's download
        have = part.stat().st_size if part.exists() else 0
        self._report_command(
            "downloading",
            command,
            f"resuming at byte {have}" if have else "starting",
            bytes_done=have,
            bytes_total=command.size,
        )
        half = command.size // 2

        def progress(done: int) -> None:
            if self._stop.is_set() or self._desired != command:
                raise _Superseded()
            if done >= half:
                crash_point("downloading")

        try:
            result = download(
                url, part, command.size, command.sha256, headers, self.ota.download_timeout_s, progress
            )
        except DiskFullError as exc:
            raise _Transient(str(exc)) from exc
        except DownloadError as exc:
            raise _Transient(str(exc)) from exc
        log.info(
            "release %d: %d bytes received (resumed from %d)",
            command.release_id,
            result.received_bytes,
            result.resumed_from,
        )
        return result.path

    def _remove_download(self, command: ModelCommand) -> None:
        (self.slots.downloads / f"{command.sha256}.part").unlink(missing_ok=True)

    def _ensure_wanted(self, command: ModelCommand) -> None:
        if self._stop.is_set() or self._desired != command:
            raise _Superseded()

    # --- switching and the health window --------------------------------------------------------------
    def _switch(
        self, command: ModelCommand, slot: Literal["a", "b"], manifest: ModelManifest, detector: Detector
    ) -> None:
        host = self.host
        info = SlotInfo(
            release_id=command.release_id,
            name=manifest.name,
            version=manifest.version,
            archive_sha256=command.sha256,
            model_sha256=manifest.files[manifest.model_file],
            installed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        frames, times = host.frame_times()
        baseline = _mean(times[-_BASELINE_FRAMES:])
        with self.model_lock:  # waits for the frame in progress: the switch falls between two frames
            started = time.perf_counter()
            old = host.detector
            self.slots.switch(slot, info, baseline)
            crash_point("switching")
            host.detector = detector
            host.model_switched()
            switch_ms = (time.perf_counter() - started) * 1000
        self.last_switch_ms = switch_ms
        self._watch = _Watch(time.monotonic(), frames, baseline, old, command.release_id, command.version)
        log.info("switched to %s v%s in %.1f ms (slot %s)", manifest.name, manifest.version, switch_ms, slot)
        self._report_command(
            "switched",
            command,
            f"running slot {slot}; watching it for {self.ota.health_window_s:.0f} s",
            switch_ms=round(switch_ms, 2),
            previous=old.info.ref,
        )

    def _frame_limit(self, baseline_ms: float | None) -> float | None:
        limits = [
            v for v in (self.ota.max_frame_ms, baseline_ms and baseline_ms * self.ota.max_slowdown) if v
        ]
        return min(limits) if limits else None

    def _check_health(self, watch: _Watch) -> None:
        crash_point("confirming")
        frames, times = self.host.frame_times()
        new = frames - watch.frames_at_switch
        mean = _mean(times[-min(new, len(times)) :]) if new > 0 else None
        limit = self._frame_limit(watch.baseline_ms)
        if new >= MIN_FRAMES_TO_JUDGE and mean is not None and limit is not None and mean > limit:
            before = f", {watch.baseline_ms:.0f} ms before" if watch.baseline_ms else ""
            self._go_back(
                watch,
                f"cannot keep up: {mean:.0f} ms per frame over {new} frames (limit {limit:.0f} ms{before})",
            )
            return
        if time.monotonic() - watch.started < self.ota.health_window_s:
            return
        self.slots.keep()
        self._watch = None
        running = self.host.detector.info
        speed = f", {mean:.0f} ms per frame" if mean is not None else ""
        self._report(
            "installed",
            watch.release_id,
            watch.version,
            f"kept after a {self.ota.health_window_s:.0f} s health window ({new} frames{speed})",
        )
        self._announced.add((running.sha256, "installed"))

    def _go_back(self, watch: _Watch, reason: str) -> None:
        host = self.host
        target = self.slots.state.previous or BASE
        replacement = watch.old
        if replacement is None:  # after a restart: load the previous model again
            try:
                replacement = self._base_detector() if target == BASE else self._load_slot(target)
            except ModelLoadError as exc:
                log.error("previous model %s does not load (%s): going back to the base model", target, exc)
                replacement = self._base_detector()
        failed_info = self.slots.info(self.slots.state.active)
        with self.model_lock:
            failed = host.detector
            self.slots.go_back()
            host.detector = replacement
            host.model_switched()
        if failed_info is not None:
            self.slots.refuse(
                failed_info.archive_sha256, watch.release_id, "rolled_back", reason, self.agent_version
            )
        self._watch = None
        log.error("went back to %s v%s: %s", replacement.info.name, replacement.info.version, reason)
        self._report("rolled_back", watch.release_id, watch.version, reason, previous=failed.info.ref)

    # --- reports ------------------------------------------------------------------------------------------
    def _once(self, command: ModelCommand, stage: OtaStage, reason: str) -> None:
        key = (command.model_sha256 if stage == "installed" else command.sha256, stage)
        if key in self._announced:
            return
        self._announced.add(key)
        self._report_command(stage, command, reason)

    def _report_command(
        self,
        stage: OtaStage,
        command: ModelCommand,
        reason: str | None,
        **extra: object,
    ) -> None:
        self._report(stage, command.release_id, command.version, reason, **extra)

    def _report(
        self,
        stage: OtaStage,
        release_id: int | None,
        version: str | None,
        reason: str | None,
        **extra: object,
    ) -> None:
        model = self.host.detector.info.ref if self._host is not None else None
        progress = OtaProgress.model_validate(
            {
                "ts": utc_now(),
                "release_id": release_id,
                "version": version,
                "stage": stage,
                "reason": reason[:500] if reason else None,
                "model": model,
                **extra,
            }
        )
        log.info("ota %s (release %s): %s", stage, release_id, (reason or "")[:200])
        self._send(progress.to_json())

    def _queue(self, stage: OtaStage, release_id: int | None, version: str | None, reason: str) -> None:
        """A report from before the agent runs (at start): sent once it does."""
        progress = OtaProgress(
            ts=utc_now(), release_id=release_id, version=version, stage=stage, reason=reason[:500]
        )
        log.error("ota %s: %s", stage, reason)
        self._early_reports.append(progress.to_json())

    def _send(self, payload: bytes) -> None:
        if self._host is None:
            self._early_reports.append(payload)
            return
        try:
            self.host.spool_ota(payload)
        except Exception as exc:  # a full disk must not stop the update logic; the log keeps it
            log.error("could not queue an ota report: %s", exc)


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc
