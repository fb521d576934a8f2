from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import SAMPLES, TIME_SCALE


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trapline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120 * TIME_SCALE,
        check=False,
    )


def test_check_prints_detections_and_latency(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: trap-07\nsource: {{type: folder, path: {tmp_path}}}\n")
    result = _run("edge", "check", "--config", str(config), "--image", str(SAMPLES / "cougar-39858-0.jpg"))
    assert result.returncode == 0, result.stderr
    assert "latency" in result.stdout
    assert "found    animal" in result.stdout


def test_run_with_a_bad_config_exits_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("device_id: trap-07\nsource: {type: folder, path: /x}\nheartbeat_interval: 5\n")
    result = _run("edge", "run", "--config", str(config))
    assert result.returncode == 78
    assert "heartbeat_interval" in result.stderr
