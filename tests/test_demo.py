"""`make demo`, shortened: broker with per-trap credentials, server, ingest, two real traps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trapline.cli.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(frames=6, seconds=30, workdir=tmp_path) == 0
    printed = capsys.readouterr().out
    assert "Dashboard: http://127.0.0.1:" in printed
    assert "Log in with the token: " in printed
    db = sqlite3.connect(tmp_path / "trapline.sqlite")
    frames = dict(
        db.execute("SELECT device_id, COUNT(*) FROM detection_frames GROUP BY device_id").fetchall()
    )
    assert frames == {"trap-01": 6, "trap-02": 6}
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM media GROUP BY kind").fetchall())
    assert kinds.get("crop", 0) > 0
    assert kinds.get("thumbnail", 0) > 0
    assert dict(db.execute("SELECT id, state FROM devices").fetchall()) == {
        "trap-01": "stopped",
        "trap-02": "stopped",
    }
    assert db.execute("SELECT COUNT(*) FROM dead_letters").fetchone() == (0,)
    stored = {p.name for p in (tmp_path / "data" / "media").rglob("*") if p.is_file()}
    # a burst is one picture taken three times: identical pictures are one file, linked thrice
    assert stored == {row[0] for row in db.execute("SELECT DISTINCT sha256 FROM media")}
    # each trap its own photos, at made-up times spread over past days and nights
    files = dict(
        db.execute(
            "SELECT device_id, GROUP_CONCAT(DISTINCT image_file) FROM detection_frames GROUP BY device_id"
        )
    )
    assert not set(files["trap-01"].split(",")) & set(files["trap-02"].split(","))
    times = [row[0] for row in db.execute("SELECT captured_at FROM detection_frames ORDER BY captured_at")]
    assert len(set(times)) == len(times) and times[0] < times[-1]
    assert db.execute("SELECT COUNT(*) FROM deployments WHERE latitude IS NOT NULL").fetchone() == (2,)
