"""Pictures for the server are queued with their frame, all or nothing, even on a full disk."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

from tests.conftest import SAMPLES
from trapline.edge.agent import Agent
from trapline.edge.config import AgentConfig


def _fill(path: Path) -> None:
    error: OSError | None = None
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            error = exc
    assert error is not None
    assert error.errno == errno.ENOSPC


def test_a_full_disk_leaves_no_pictures_and_the_retry_queues_them(tmp_path: Path, small_disk: Path) -> None:
    config = AgentConfig.model_validate({
        "device_id": "trap-07",
        "source": {"type": "replay", "files": [str(SAMPLES / "cougar-39858-0.jpg")], "count": 1},
        "upload": {"url": "http://127.0.0.1:9", "mode": "thumbnails"},
        "spool": {"path": str(small_disk / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "q"),
    })  # fmt: skip
    agent = Agent(config)
    try:
        frame = next(f for f in agent.source.frames(threading.Event(), lambda k: False) if f is not None)
        filler = small_disk / "filler"
        _fill(filler)  # something else filled the card
        agent.process(frame)
        assert agent.counters.spool_errors == 1
        assert agent.counters.frames_processed == 0
        assert list(agent.spool.uploads_dir.iterdir()) == []
        assert agent.spool.upload_backlog() == (0, 0)
        filler.unlink()  # space again: the frame is tried again, as the folder source does
        agent.process(frame)
        assert agent.counters.frames_processed == 1
        kinds = sorted(p.name.rsplit("-", 2)[1] for p in agent.spool.uploads_dir.iterdir())
        assert kinds == ["crop", "thumbnail"]  # the cougar: one crop, one thumbnail
        assert agent.spool.upload_backlog()[0] == 2
    finally:
        agent.spool.close()
