"""A trap's model update, in process against a real file server: install, refuse, go back."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.disk import small_tmpfs
from tests.support.ota import BundleFileServer, Release, ReleaseKit, ota_reports
from trapline.edge.agent import AgentCounters, load_detector
from trapline.edge.config import PACKAGED_MODEL, PACKAGED_SAMPLES, AgentConfig
from trapline.edge.detector import Detector
from trapline.edge.downlink import CommandDispatcher
from trapline.edge.ota.slots import SlotStore
from trapline.edge.ota.updater import ModelUpdates, load_installed
from trapline.files import file_sha256
from trapline.rollback import sign_rollback

PACKAGED_SHA = file_sha256(PACKAGED_MODEL / "model.onnx")


class FakeHost:
    """The agent's side, without camera or broker: reports collected, frame times set by the test."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.reports: list[dict[str, Any]] = []
        self.frames = 0
        self.times: list[float] = []
        self.switches = 0
        self.on_report: Callable[[dict[str, Any]], None] | None = None

    def spool_ota(self, payload: bytes) -> None:
        report = json.loads(payload)
        self.reports.append(report)
        if self.on_report is not None:
            self.on_report(report)

    def frame_times(self) -> tuple[int, list[float]]:
        return self.frames, list(self.times)

    def model_switched(self) -> None:
        self.switches += 1

    def add_frames(self, count: int, ms: float) -> None:
        self.frames += count
        self.times = (self.times + [ms] * count)[-1000:]

    def stages(self, release_id: int | None = None) -> list[str]:
        return ota_reports(self.reports, release_id)

    def wait_for(self, stage: str, release_id: int | None = None, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [r for r in self.reports if r["stage"] == stage and release_id in (None, r["release_id"])]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {stage!r} report in {timeout_s} s: {self.reports}")


def make_config(tmp_path: Path, kit: ReleaseKit, server: BundleFileServer, **ota: Any) -> AgentConfig:
    return AgentConfig.model_validate({
        "device_id": "trap-07",
        "source": {"type": "replay", "files": [str(PACKAGED_SAMPLES)]},
        "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
        "model": {"keyring": str(kit.keyring)},
        "ota": {"server_url": f"http://127.0.0.1:{server.port}", "health_window_s": 0.5,
                "retry_min_s": 0.2, "window": {"min_disk_free_mb": 0}, **ota},
    })  # fmt: skip


class Trap:
    """ModelUpdates booted as the agent boots it."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.updates = ModelUpdates(config, "0.1.0")
        self.host = FakeHost(self.updates.boot(lambda: load_detector(config, AgentCounters())))
        self.updates.start(self.host)

    @property
    def version(self) -> str:
        return self.host.detector.info.version

    def stop(self) -> None:
        self.updates.stop()


@pytest.fixture
def server(served: Path) -> Iterator[BundleFileServer]:
    with BundleFileServer(served) as running:
        yield running


def publish(served: Path, release: Release) -> str:
    shutil.copyfile(release.archive, served / f"{release.sha256}.tar.gz")
    return f"/{release.sha256}.tar.gz"


def test_a_release_goes_into_the_inactive_slot_and_is_kept_after_its_health_window(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    trap = Trap(make_config(tmp_path, kit, server))
    assert (trap.version, trap.host.detector.info.sha256) == ("1", PACKAGED_SHA)
    command = release_v2.command(publish(served, release_v2), release_id=5)
    trap.updates.on_model_command(command)
    installed = trap.host.wait_for("installed")
    assert trap.host.stages(5) == [
        "received", "downloading", "verifying", "installing", "testing", "switched", "installed",
    ]  # fmt: skip
    switched = next(r for r in trap.host.reports if r["stage"] == "switched")
    assert switched["previous"]["sha256"] == PACKAGED_SHA
    assert switched["model"]["sha256"] == release_v2.model_sha256 == installed["model"]["sha256"]
    assert switched["switch_ms"] < 2000
    assert trap.version == "2" and trap.host.switches == 1
    state = trap.updates.slots.state
    assert (state.active, state.previous, state.trial) == ("a", "base", None)
    assert list(trap.updates.slots.downloads.iterdir()) == []  # the archive is gone once unpacked
    # the retained command again (a reconnect): nothing happens
    requests = len(server.requests)
    trap.updates.on_model_command(command)
    time.sleep(0.5)
    assert len(server.requests) == requests and trap.host.stages(5).count("installed") == 1
    trap.stop()
    checked = load_installed(trap.config)  # what `trapline edge check` loads
    assert checked is not None and checked.info.sha256 == release_v2.model_sha256
    # a restart runs the installed model (verified again), and reports it runs the desired one
    again = Trap(trap.config)
    assert again.version == "2" and again.host.detector.info.sha256 == release_v2.model_sha256
    again.updates.on_model_command(command)
    again.host.wait_for("installed")
    assert again.host.stages() == ["installed"]
    again.stop()


def test_a_tampered_bundle_is_refused_and_not_tried_again(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    tampered = kit.tampered(release_v2)
    trap = Trap(make_config(tmp_path, kit, server))
    command = tampered.command(publish(served, tampered), release_id=6)
    trap.updates.on_model_command(command)
    refused = trap.host.wait_for("refused")
    assert "does not match its sha256" in refused["reason"]
    assert trap.version == "1"
    assert trap.updates.slots.state.slots == {}
    assert not any(trap.updates.slots.path(slot).exists() for slot in ("a", "b"))
    requests = len(server.requests)
    trap.stop()
    again = Trap(trap.config)  # remembered across a restart: no second download
    again.updates.on_model_command(command)
    time.sleep(1.0)
    assert len(server.requests) == requests and again.host.reports == []
    again.stop()


def test_an_older_version_needs_a_signed_rollback(
    tmp_path: Path, kit: ReleaseKit, served: Path, server: BundleFileServer
) -> None:
    older = kit.build("0.9")
    trap = Trap(make_config(tmp_path, kit, server))
    url = publish(served, older)
    trap.updates.on_model_command(older.command(url, release_id=7))
    refused = trap.host.wait_for("refused")
    assert "older than the running v1" in refused["reason"] and "not a signed rollback" in refused["reason"]
    assert server.requests == []  # refused before downloading anything
    other = sign_rollback(kit.private_key, older.name, older.version, "0" * 64)  # another model's grant
    forged = kit.grant(older).model_copy(update={"signature": other.signature})
    trap.updates.on_model_command(older.command(url, release_id=8, rollback=forged))
    assert "rollback grant for v0.9 does not verify" in trap.host.wait_for("refused", 8)["reason"]
    trap.updates.on_model_command(older.command(url, release_id=9, rollback=kit.grant(older)))
    trap.host.wait_for("installed", 9)
    assert trap.version == "0.9"
    trap.stop()


def test_incompatible_or_untrusted_releases_are_refused_before_download(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    trap = Trap(make_config(tmp_path, kit, server))
    url = publish(served, release_v2)
    cases = {
        10: ({"min_agent_version": "9.1"}, "needs agent 9.1 or newer"),
        11: ({"runtime": "tensorrt"}, "unknown model format"),
        12: ({"key_id": "0123456789abcdef"}, "does not trust"),
    }
    for release_id, (changes, expected) in cases.items():
        trap.updates.on_model_command(release_v2.command(url, release_id=release_id, **changes))
        deadline = time.monotonic() + 10
        while release_id not in {r["release_id"] for r in trap.host.reports} and time.monotonic() < deadline:
            time.sleep(0.05)
        report = [r for r in trap.host.reports if r["release_id"] == release_id][-1]
        assert report["stage"] == "refused" and expected in report["reason"]
    assert server.requests == [] and trap.version == "1"
    trap.stop()


def test_a_model_that_fails_its_self_test_is_never_switched_to(
    tmp_path: Path, kit: ReleaseKit, served: Path, server: BundleFileServer
) -> None:
    broken = kit.failing_self_test("3")
    trap = Trap(make_config(tmp_path, kit, server))
    trap.updates.on_model_command(broken.command(publish(served, broken), release_id=14))
    report = trap.host.wait_for("rolled_back")
    assert report["reason"].startswith(
        "self-test failed: reference-0.jpg: expected animal conf 0.90 at [0.6,"
    )
    assert trap.host.stages(14) == [
        "received",
        "downloading",
        "verifying",
        "installing",
        "testing",
        "rolled_back",
    ]
    assert trap.version == "1" and trap.host.switches == 0
    assert trap.updates.slots.refusal(broken.sha256) is not None
    assert trap.updates.slots.state.slots == {}
    trap.stop()


def test_a_model_that_cannot_keep_up_is_switched_back(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    trap = Trap(make_config(tmp_path, kit, server, health_window_s=60))
    old = trap.host.detector
    trap.host.add_frames(50, 20.0)  # the old model: 20 ms a frame
    trap.updates.on_model_command(release_v2.command(publish(served, release_v2), release_id=15))
    trap.host.wait_for("switched")
    assert trap.version == "2"
    trap.host.add_frames(10, 90.0)  # 4.5x slower than before: more than max_slowdown (3x)
    report = trap.host.wait_for("rolled_back")
    assert "cannot keep up: 90 ms per frame over 10 frames (limit 60 ms, 20 ms before)" in report["reason"]
    assert trap.host.detector is old and trap.host.switches == 2
    assert report["model"]["sha256"] == PACKAGED_SHA and report["previous"]["version"] == "2"
    assert trap.updates.slots.state.active == "base"
    trap.stop()


def test_a_model_that_keeps_crashing_the_agent_is_given_up(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    config = make_config(tmp_path, kit, server, health_window_s=60, max_trial_crashes=2)
    trap = Trap(config)
    trap.updates.on_model_command(release_v2.command(publish(served, release_v2), release_id=16))
    trap.host.wait_for("switched")
    # the agent dies (no clean stop) three times inside the health window
    versions = []
    for _ in range(3):
        crashed = Trap(config)
        versions.append(crashed.version)
    assert versions == ["2", "2", "1"]
    assert crashed.host.stages(16) == ["rolled_back"]
    assert "crashed the agent 3 times" in crashed.host.reports[0]["reason"]
    assert SlotStore(tmp_path / "state" / "models").refusal(release_v2.sha256) is not None
    crashed.stop()


def test_updates_wait_for_the_window_and_the_download_spread(
    tmp_path: Path, kit: ReleaseKit, release_v2: Release, served: Path, server: BundleFileServer
) -> None:
    hour = time.localtime().tm_hour
    closed = Trap(
        make_config(tmp_path / "closed", kit, server, window={"hours": [(hour + 2) % 24, (hour + 3) % 24]})
    )
    closed.updates.on_model_command(release_v2.command(publish(served, release_v2), release_id=17))
    assert "outside the update hours" in closed.host.wait_for("waiting")["reason"]
    time.sleep(0.5)
    assert server.requests == [] and closed.version == "1"
    closed.stop()
    spread = Trap(make_config(tmp_path / "spread", kit, server))
    started = time.monotonic()
    spread.updates.on_model_command(
        release_v2.command(publish(served, release_v2), release_id=18, download_delay_s=2)
    )
    assert "starting in 2 s" in spread.host.wait_for("waiting")["reason"]
    spread.host.wait_for("downloading")
    assert time.monotonic() - started >= 2.0
    spread.host.wait_for("installed")
    spread.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 9 MB file system: the trap's model slots, which a test fills while it downloads."""
    with small_tmpfs(tmp_path, "9m") as mount_point:
        yield mount_point


def test_disk_full_during_a_download_keeps_the_old_model_and_the_update_recovers(
    tmp_path: Path,
    kit: ReleaseKit,
    release_v2: Release,
    served: Path,
    server: BundleFileServer,
    small_disk: Path,
) -> None:
    config = make_config(tmp_path, kit, server, state_dir=str(small_disk / "models"))
    trap = Trap(config)
    filler = small_disk / "pictures.bin"
    server.bytes_per_s = 8e6  # slow enough that the disk fills while the download runs

    def fill_disk_once(report: dict[str, Any]) -> None:
        if report["stage"] == "downloading" and not filler.exists():
            with filler.open("wb") as handle, contextlib.suppress(OSError):  # full: that is the point
                handle.write(b"\0" * (8 * 1024 * 1024))

    trap.host.on_report = fill_disk_once
    trap.updates.on_model_command(release_v2.command(publish(served, release_v2), release_id=19))
    retrying = trap.host.wait_for("retrying")
    assert "disk full" in retrying["reason"] and "attempt 1 of" in retrying["reason"]
    assert trap.version == "1"
    assert list(trap.updates.slots.downloads.iterdir()) == []  # no partial file left
    assert trap.updates.slots.state.slots == {}
    trap.host.on_report = None
    filler.unlink()
    trap.host.wait_for("installed")
    assert trap.version == "2"
    trap.stop()


def test_a_command_the_trap_cannot_use_is_reported_on_ota(
    tmp_path: Path, kit: ReleaseKit, server: BundleFileServer
) -> None:
    trap = Trap(make_config(tmp_path, kit, server))
    dispatcher = CommandDispatcher("trapline", "trap-07", trap.updates.handlers(), trap.updates.command_error)
    dispatcher.dispatch("trapline/trap-07/cmd/model", b'{"schema": "trapline.cmd.model/1"}')
    report = trap.host.wait_for("refused")
    assert report["release_id"] is None and report["reason"].startswith("malformed cmd/model command:")
    assert trap.version == "1"
    trap.stop()
    disabled = make_config(tmp_path / "off", kit, server, enabled=False)
    assert ModelUpdates(disabled, "0.1.0").handlers() == {}  # the dispatcher then reports "no handler"
