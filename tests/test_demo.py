"""`make demo` as a user runs it (its own process): broker with per-trap credentials, server,
ingest, job worker, two real traps. SIGTERM stops everything in order and leaves no process
behind; a second run starts fresh; a child that dies is reported."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow


def _start(workdir: Path, out: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "demo", "--frames", "200", "--workdir", str(workdir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, out: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}; demo output:\n{out.read_text()[-3000:]}"
        time.sleep(0.3)


def _frames(database: Path) -> dict[Any, Any]:
    return dict(_query(database, "SELECT device_id, COUNT(*) FROM detection_frames GROUP BY device_id"))


def _both_have(database: Path, frames: int) -> bool:
    counts = _frames(database)
    return all(int(str(counts.get(trap, 0))) >= frames for trap in ("trap-01", "trap-02"))


def _running(demo: subprocess.Popen[bytes], out: Path) -> list[psutil.Process]:
    _wait(lambda: "Trapline demo is running" in out.read_text(), 120, "the demo did not start", out)
    family: list[psutil.Process] = psutil.Process(demo.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in family)
    for part in ("mosquitto", "server api", "server ingest", "server worker", "edge run"):
        assert part in names, part
    return family


def _gone(family: list[psutil.Process]) -> list[str]:
    alive = []
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(process.cmdline()))
    return alive


def _first_run(workdir: Path, database: Path, out: Path) -> None:
    """Run, then SIGTERM (as systemd, a supervisor or `kill` would): everything stops in order."""
    demo = _start(workdir, out)
    try:
        family = _running(demo, out)
        _wait(lambda: _both_have(database, 2), 120, "no detections", out)
        _wait(lambda: bool(_query(database, "SELECT 1 FROM media LIMIT 1")), 60, "no pictures", out)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(90) == 0, out.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            demo.kill()
    assert _gone(family) == []  # no broker, server, ingest, worker or trap left running
    # traps stopped first, while broker and ingest still ran: their "stopped" was stored
    assert dict(_query(database, "SELECT id, state FROM devices")) == {
        "trap-01": "stopped",
        "trap-02": "stopped",
    }
    assert _query(database, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    stored = {p.name for p in (workdir / "data" / "media").rglob("*") if p.is_file()}
    # a burst is one picture taken three times: identical pictures are one file, linked thrice
    assert stored == {str(row[0]) for row in _query(database, "SELECT DISTINCT sha256 FROM media")}
    # each trap its own photos, at made-up times spread over past days and nights
    files = dict(_query(database, "SELECT device_id, GROUP_CONCAT(DISTINCT image_file) FROM detection_frames"
                                  " GROUP BY device_id"))  # fmt: skip
    assert not set(str(files["trap-01"]).split(",")) & set(str(files["trap-02"]).split(","))
    times = [
        row[0] for row in _query(database, "SELECT captured_at FROM detection_frames ORDER BY captured_at")
    ]
    assert len(set(times)) == len(times)
    assert _query(database, "SELECT COUNT(*) FROM deployments WHERE latitude IS NOT NULL") == [(2,)]


def test_sigterm_stops_everything_a_second_demo_starts_fresh_and_a_dead_child_ends_it(tmp_path: Path) -> None:
    workdir, database = tmp_path / "demo", tmp_path / "demo" / "trapline.sqlite"
    _first_run(workdir, database, tmp_path / "demo-1.out")
    out = tmp_path / "demo-2.out"
    demo = _start(workdir, out)
    try:
        family = _running(demo, out)
        # the traps replay again from the start: a fresh database and fresh spools
        _wait(lambda: _both_have(database, 2), 120, "no detections in the second demo", out)
        # not the first run's database: its traps said "stopped", these are online
        assert dict(_query(database, "SELECT id, state FROM devices")) == {
            "trap-01": "online",
            "trap-02": "online",
        }
        # a part of the demo dies: it is reported, and the demo ends with everything else
        ingest = next(p for p in family if "server ingest" in " ".join(p.cmdline()))
        ingest.kill()
        assert demo.wait(90) == 1
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "ingest exited with code -9" in out.read_text()
    assert _gone(family) == []


def test_a_folder_that_is_not_a_demo_is_never_emptied(tmp_path: Path) -> None:
    from trapline.cli.demo import fresh_workdir

    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RuntimeError, match="not a demo folder"):
        fresh_workdir(tmp_path)
    assert (tmp_path / "thesis.tex").exists()
