"""The agent's own guarantees, in process: ids that survive a reinstall, honest clocks, pictures on
disk before their spool row, a damaged spool replaced, and a watchdog fed only while every worker
thread lives."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, TIME_SCALE
from trapline.contracts import DetectionMessage
from trapline.edge.agent import Agent
from trapline.edge.clock import EARLIEST_PLAUSIBLE, clock_unsynced
from trapline.edge.config import AgentConfig
from trapline.edge.sources import Frame
from trapline.edge.spool import corrupt_spools

COUGAR = SAMPLES / "cougar-39858-0.jpg"


def _config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    raw: dict[str, Any] = {
        "device_id": "trap-07",
        "source": {"type": "replay", "files": [str(COUGAR)], "count": 1},
        "mqtt": {"host": "127.0.0.1", "port": 9},  # nothing listens: the spool keeps everything
        "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "quarantine"),
    }
    raw.update(overrides)
    return AgentConfig.model_validate(raw)


def _frame(key: str, captured_at: datetime | None = None) -> Frame:
    data = COUGAR.read_bytes()
    return Frame(key=key, name=COUGAR.name, captured_at=captured_at or datetime.now(UTC), data=data)


def _spooled(agent: Agent, kind: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in agent.spool.get_batch(0, 1000) if m.topic.endswith(kind)]


def test_a_reinstalled_trap_never_reuses_its_old_ids(tmp_path: Path) -> None:
    first = Agent(_config(tmp_path))
    for n in range(3):
        first.process(_frame(f"k{n}", datetime(2026, 11, 22, 3, 0, n, tzinfo=UTC)))
    first._spool_summary(first.bursts.close())
    old = _spooled(first, "/detections")
    old_sequences = _spooled(first, "/sequences")
    first.spool.close()

    # the card was reflashed: same device id, a fresh spool
    (tmp_path / "state" / "spool.sqlite").unlink()
    second = Agent(_config(tmp_path))
    for n in range(3):
        second.process(_frame(f"k{n}", datetime(2026, 11, 23, 3, 0, n, tzinfo=UTC)))
    second._spool_summary(second.bursts.close())
    new = _spooled(second, "/detections")
    new_sequences = _spooled(second, "/sequences")
    second.spool.close()

    assert len(old) == len(new) == 3 and len(old_sequences) == len(new_sequences) == 1
    old_ids = {m["id"] for m in old} | {m["sequence_id"] for m in old + old_sequences}
    new_ids = {m["id"] for m in new} | {m["sequence_id"] for m in new + new_sequences}
    assert not old_ids & new_ids  # the server stores both installations' frames
    for message in old + new:
        DetectionMessage.model_validate_json(json.dumps(message))  # owned, safe alphabet, in bounds
        device, installation, number = message["id"].split(":")
        assert device == "trap-07" and len(installation) == 12 and number.isdigit()


def test_frames_taken_before_the_clock_was_set_are_marked(tmp_path: Path) -> None:
    agent = Agent(_config(tmp_path))
    agent.process(_frame("boot", datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC)))  # a Pi before NTP
    agent.process(_frame("later"))
    unsynced, synced = _spooled(agent, "/detections")
    agent.spool.close()
    assert unsynced["clock_unsynced"] is True
    assert unsynced["captured_at"].startswith("1970-01-01T00:00:42")  # kept as read, not invented
    assert "clock_unsynced" not in synced  # the usual message is exactly the documented one
    before = datetime(2024, 12, 31, tzinfo=UTC)
    assert clock_unsynced(EARLIEST_PLAUSIBLE, before)  # the trap's own clock not set
    assert not clock_unsynced(EARLIEST_PLAUSIBLE, EARLIEST_PLAUSIBLE)


def test_pictures_are_on_disk_before_their_spool_row_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, upload={"url": "http://127.0.0.1:9", "mode": "thumbnails"})
    agent = Agent(config)
    events: list[str] = []
    real_fsync, real_put = os.fsync, agent.spool.put

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def put(*args: Any, **kwargs: Any) -> None:
        events.append("commit")
        real_put(*args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(agent.spool, "put", put)
    agent.process(_frame("k"))
    agent.spool.close()
    pictures = sorted(str(p) for p in agent.spool.uploads_dir.iterdir())
    assert len(pictures) == 2  # the cougar's crop and the thumbnail
    commit = events.index("commit")
    synced = [e.removeprefix("fsync ") for e in events[:commit]]
    assert all(p in synced for p in pictures)
    assert str(agent.spool.uploads_dir) in synced  # their directory entries too


def test_a_garbage_spool_is_moved_aside_and_the_agent_reports_it(tmp_path: Path) -> None:
    spool_path = tmp_path / "state" / "spool.sqlite"
    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(b"not a database, a card that was pulled out mid-write" * 100)
    agent = Agent(_config(tmp_path))
    agent.process(_frame("k"))
    heartbeat = agent.heartbeat()
    agent.spool.close()
    assert heartbeat.spool_resets == 1
    assert heartbeat.last_error is not None and "moved aside" in heartbeat.last_error
    assert [p.read_bytes()[:15] for p in corrupt_spools(spool_path)] == [b"not a database,"]
    assert agent.counters.frames_processed == 1


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(0.1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield server
    server.close()


def _received(server: socket.socket, seconds: float, watchdogs: int | None = None) -> list[str]:
    """What systemd would receive within `seconds` (or until `watchdogs` WATCHDOG=1 arrived)."""
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (watchdogs is None or messages.count("WATCHDOG=1") < watchdogs):
        try:
            messages.append(server.recv(256).decode())
        except TimeoutError:
            continue
    return messages


def _kill_uploader(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the uploader thread die the way a bug would (not an Exception its loop survives)."""
    die = threading.Event()

    def upload_next(_delay: float) -> float:
        if die.is_set():
            raise SystemExit("uploader bug")
        time.sleep(0.05)
        return 1.0

    monkeypatch.setattr(agent.uploader, "_upload_next", upload_next)
    return die


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watchdog_is_fed_only_while_every_thread_lives(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # fed every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    source = {"type": "replay", "files": [str(COUGAR)], "count": 100_000, "interval_s": 0.05}
    agent = Agent(_config(tmp_path, source=source, upload={"url": "http://127.0.0.1:9", "mode": "crops"}))
    die = _kill_uploader(agent, monkeypatch)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        alive = _received(notify_socket, 2.0 * TIME_SCALE, watchdogs=2)  # emulated arm64: slow frames
        assert alive[0] == "READY=1" and alive.count("WATCHDOG=1") >= 2
        die.set()
        deadline = time.monotonic() + 10
        while not agent.died and time.monotonic() < deadline:  # the thread dies; the agent notices
            time.sleep(0.05)
        _received(notify_socket, 0.3)  # what was sent before that
        dead = _received(notify_socket, 1.5)
        assert "WATCHDOG=1" not in dead  # systemd kills and restarts us after WatchdogSec
        assert agent.died == ["uploader"] and runner.is_alive()
        assert agent.heartbeat().last_error == "thread died: uploader"
    finally:
        agent.stop()
        runner.join(30)
    assert not runner.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_without_a_watchdog_a_dead_thread_stops_the_agent_with_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    source = {"type": "replay", "files": [str(COUGAR)], "count": 100_000, "interval_s": 0.05}
    agent = Agent(_config(tmp_path, source=source, upload={"url": "http://127.0.0.1:9", "mode": "crops"}))
    _kill_uploader(agent, monkeypatch).set()
    assert agent.run() == 1  # whatever started it (systemd's Restart=always) starts it again
    assert agent.died == ["uploader"]
