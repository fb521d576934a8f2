from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from trapline.edge.spool import PRIORITY_EMPTY_FRAME, DetectionSpool, OutboundMessage, SpoolError


def _msg(n: int, size: int = 100, priority: int = 1) -> OutboundMessage:
    return OutboundMessage("trapline/t/detections", str(n).encode().ljust(size, b"."), 1, priority)


def test_messages_survive_reopening_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = DetectionSpool(path, max_bytes=10_000)
    spool.put([_msg(1), _msg(2)], processed_key="frame-1", state={"counter": "2"})
    spool.put([_msg(3)], processed_key="frame-2")
    first = spool.get_batch(after_id=0, limit=2)
    spool.ack([first[0].id])
    spool.close()

    reopened = DetectionSpool(path, max_bytes=10_000)
    left = reopened.get_batch(after_id=0, limit=10)
    assert [m.payload[:1] for m in left] == [b"2", b"3"]
    assert reopened.depth == 2 and reopened.size_bytes == 200
    assert reopened.is_processed("frame-1") and not reopened.is_processed("frame-3")
    assert reopened.get_state("counter") == "2"
    assert [m.id for m in reopened.get_batch(after_id=left[0].id, limit=10)] == [left[1].id]


def test_drop_oldest_drops_empty_frames_first_and_counts(tmp_path: Path) -> None:
    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=500, policy="drop_oldest")
    spool.put([_msg(1), _msg(2, priority=PRIORITY_EMPTY_FRAME), _msg(3), _msg(4), _msg(5)])
    spool.put([_msg(6)])  # no room: the empty frame goes first
    assert [m.payload[:1] for m in spool.get_batch(0, 10)] == [b"1", b"3", b"4", b"5", b"6"]
    spool.put([_msg(7)])  # then the oldest
    assert [m.payload[:1] for m in spool.get_batch(0, 10)] == [b"3", b"4", b"5", b"6", b"7"]
    assert spool.dropped == 2 and spool.size_bytes == 500
    spool.close()
    assert DetectionSpool(tmp_path / "s.sqlite", max_bytes=500).dropped == 2


def test_drop_newest_refuses_but_still_marks_the_frame_done(tmp_path: Path) -> None:
    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=250, policy="drop_newest")
    spool.put([_msg(1), _msg(2)])
    spool.put([_msg(3)], processed_key="k")
    assert [m.payload[:1] for m in spool.get_batch(0, 10)] == [b"1", b"2"]
    assert spool.dropped == 1 and spool.is_processed("k")


def test_full_disk_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = DetectionSpool(path, max_bytes=1 << 30)
    spool.put([_msg(0)], processed_key="before")
    # cap the database file at its current size: the next insert finds the disk "full"
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(SpoolError, match="full"):
        spool.put([_msg(1, size=50_000)], processed_key="frame", state={"counter": "9"})
    assert not spool.is_processed("frame")
    assert spool.get_state("counter") is None
    assert spool.depth == 1 and len(spool.get_batch(0, 10)) == 1


def test_ack_of_a_dropped_row_is_harmless(tmp_path: Path) -> None:
    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=150)
    spool.put([_msg(1)])
    row = spool.get_batch(0, 1)[0]
    spool.put([_msg(2)])  # drops row 1 while it is "in flight"
    spool.ack([row.id])
    assert spool.depth == 1 and spool.size_bytes == 100


def test_orphaned_pictures_are_removed_and_queued_ones_kept(tmp_path: Path) -> None:
    from trapline.edge.spool import PendingUpload

    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=10_000)
    spool.uploads_dir.mkdir(parents=True, exist_ok=True)
    queued = spool.uploads_dir / "queued.jpg"
    queued.write_bytes(b"x")
    spool.put([], uploads=[PendingUpload("t:1", "crop", queued, 1)])
    (spool.uploads_dir / "orphan.jpg").write_bytes(b"y")  # written, then the process died
    assert spool.remove_orphan_uploads() == 1
    assert [p.name for p in spool.uploads_dir.iterdir()] == ["queued.jpg"]
