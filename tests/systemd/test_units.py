"""The systemd units: `systemd-analyze verify` is clean and every unit is sandboxed.

`systemd-analyze security --offline=yes` rated the units of the first release 8.5-8.7 (EXPOSED);
the targets are 2.5 for the trap's agent (which needs the camera devices and the network) and 3.5
for the server's units.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
UNITS = ROOT / "systemd"
TARGETS = {
    "trapline-edge.service": 2.5,
    "trapline-api.service": 3.5,
    "trapline-ingest.service": 3.5,
    "trapline-worker.service": 3.5,
    "trapline-ota.service": 3.5,
    "trapline-mosquitto-reload.service": 3.5,
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


def test_every_unit_has_a_target() -> None:
    assert {p.name for p in UNITS.glob("*.service")} == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_unit_is_sandboxed(name: str) -> None:
    assert _exposure(UNITS / name) <= TARGETS[name]


def test_the_agent_may_open_the_camera_and_nothing_else(tmp_path: Path) -> None:
    text = (UNITS / "trapline-edge.service").read_text()
    assert "DevicePolicy=closed" in text
    for device in ("char-video4linux", "/dev/vchiq", "/dev/dma_heap/linux,cma"):
        assert f"DeviceAllow={device} rw" in text
    # and the exposure check would see a unit that opened /dev wide
    opened = tmp_path / "trapline-edge.service"
    opened.write_text(text.replace("DevicePolicy=closed\n", "").replace("PrivateUsers=yes\n", ""))
    assert _exposure(opened) > _exposure(UNITS / "trapline-edge.service")


def test_units_verify_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` in a throw-away root that has the commands the units start."""
    system = tmp_path / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr" / "lib" / "systemd" / "system", symlinks=True)
    for command in ("opt/trapline/venv/bin/trapline", "bin/systemctl"):
        stub = tmp_path / command
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    units = sorted([*UNITS.glob("*.service"), *UNITS.glob("*.path")])
    for unit in units:
        shutil.copyfile(unit, system / unit.name)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", *(str(system / u.name) for u in units)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
