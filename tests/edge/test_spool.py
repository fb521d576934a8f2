from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trapline.edge.spool import (
    _SCHEMA,
    PRIORITY_EMPTY_FRAME,
    DetectionSpool,
    OutboundMessage,
    SpoolError,
    corrupt_spools,
)


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


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_spool_is_moved_aside_never_deleted_and_a_fresh_one_starts(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "spool.sqlite"
    spool = DetectionSpool(path, max_bytes=1 << 30)
    spool.put([_msg(n, size=3000) for n in range(100)], processed_key="frame-1")
    old_installation = spool.installation_id
    spool.close()
    good = path.read_bytes()
    damaged = good[: len(good) // 2] if damage == "truncated" else bytes(range(256)) * 64
    path.write_bytes(damaged)
    (spool_uploads := tmp_path / "uploads").mkdir()
    (spool_uploads / "t_1-crop-0.jpg").write_bytes(b"picture of the old spool")

    fresh = DetectionSpool(path, max_bytes=1 << 30)  # no exception: the trap keeps running
    assert fresh.reset_reason is not None and "moved aside" in fresh.reset_reason
    assert fresh.resets == 1
    assert fresh.depth == 0 and not fresh.is_processed("frame-1")
    assert fresh.installation_id != old_installation  # new ids: nothing collides with the old life
    fresh.put([_msg(1)])
    fresh.close()
    aside = corrupt_spools(path)
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept as it was, for a look
    assert (tmp_path / f"uploads.corrupt-{aside[0].name.split('.corrupt-')[1]}" / "t_1-crop-0.jpg").exists()

    again = DetectionSpool(path, max_bytes=1 << 30)  # the fresh spool is fine: no second reset
    assert again.reset_reason is None and again.resets == 1 and again.depth == 1
    again.close()


def test_a_spool_that_cannot_be_opened_is_an_error_not_a_corruption(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.mkdir()  # cannot be opened as a file: nothing is damaged, nothing may be moved aside
    with pytest.raises(SpoolError, match="unable to open"):
        DetectionSpool(path, max_bytes=1 << 30)
    assert path.is_dir() and corrupt_spools(path) == []


def test_the_installation_id_is_made_once_per_spool(tmp_path: Path) -> None:
    first = DetectionSpool(tmp_path / "a" / "spool.sqlite", max_bytes=1 << 20)
    installation = first.installation_id
    first.close()
    assert DetectionSpool(tmp_path / "a" / "spool.sqlite", max_bytes=1 << 20).installation_id == installation
    # a reinstalled trap: a fresh spool, another id
    assert DetectionSpool(tmp_path / "b" / "spool.sqlite", max_bytes=1 << 20).installation_id != installation


def test_dead_letters_are_kept_bounded_counted_and_can_be_requeued(tmp_path: Path) -> None:
    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=10_000, dead_letter_max_bytes=250)
    other = OutboundMessage("trapline/t/sequences", b"s".ljust(100, b"."))
    spool.put([_msg(1), other, _msg(2), other, _msg(3)])
    rows = spool.get_batch(0, 10)
    assert spool.dead_letter([rows[1].id], "broker refused it: Not authorized (0x87)") == 1
    assert spool.dead_letter_topic("trapline/t/sequences", "topic refused", exclude=()) == 1
    assert spool.dead_letter_count == 2 and spool.depth == 3 and spool.size_bytes == 300
    assert [m.payload[:1] for m in spool.get_batch(0, 10)] == [b"1", b"2", b"3"]
    assert [d.reason for d in spool.dead_letters()] == [
        "broker refused it: Not authorized (0x87)",
        "topic refused",
    ]
    spool.dead_letter([spool.get_batch(0, 1)[0].id], "refused")  # 300 bytes > 250: the oldest goes
    assert spool.dead_letter_count == 2 and spool.dropped == 1
    spool.close()
    reopened = DetectionSpool(tmp_path / "s.sqlite", max_bytes=10_000, dead_letter_max_bytes=250)
    assert reopened.dead_letter_count == 2 and reopened.dropped == 1
    assert reopened.requeue_dead_letters() == 2
    assert reopened.dead_letter_count == 0 and reopened.depth == 4
    assert [m.payload[:1] for m in reopened.get_batch(0, 10)] == [b"2", b"3", b"s", b"1"]


def test_old_frame_marks_are_forgotten_unless_their_file_is_still_there(tmp_path: Path) -> None:
    spool = DetectionSpool(tmp_path / "s.sqlite", max_bytes=1 << 20, synchronous="normal")
    for n in range(2500):  # more than one batch of 1,000
        spool.mark_processed(f"k{n}")
    assert spool.prune_processed(3600, lambda key: True) == 0  # nothing old enough yet
    present = {f"k{n}" for n in range(0, 2500, 7)}
    assert spool.prune_processed(0, lambda key: key in present) == 2500 - len(present)
    assert all(spool.is_processed(k) for k in present) and not spool.is_processed("k1")
    # kept marks were refreshed: a second pass within the period looks at nothing
    assert spool.prune_processed(3600, lambda key: False) == 0


def test_acked_space_goes_back_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = DetectionSpool(path, max_bytes=1 << 30)
    spool.put([_msg(n, size=4000) for n in range(1000)])
    spool.ack(m.id for m in spool.get_batch(0, 1000))
    spool._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size
    assert spool.vacuum() > 500
    spool._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert path.stat().st_size < before / 4


def test_a_spool_from_before_incremental_vacuum_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA)  # as an older agent made it: auto_vacuum off
    old.close()
    assert sqlite3.connect(path).execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    spool = DetectionSpool(path, max_bytes=1 << 20)
    assert spool._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_a_technician_can_list_and_requeue_dead_letters(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.sqlite"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"device_id: trap-07\nsource: {{type: folder, path: {tmp_path}}}\nspool: {{path: {spool_path}}}\n"
    )
    spool = DetectionSpool(spool_path, max_bytes=1 << 20)
    spool.put([_msg(1), _msg(2)])
    spool.dead_letter([m.id for m in spool.get_batch(0, 10)], "broker refused it: Not authorized (0x87)")
    spool.close()

    def edge(*args: str) -> str:
        command = [
            sys.executable,
            "-m",
            "trapline.cli",
            "edge",
            "dead-letters",
            "--config",
            str(config),
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    listing = edge()
    assert listing.count("trapline/t/detections\tbroker refused it: Not authorized (0x87)") == 2
    assert "2 dead letter(s)" in listing
    assert "2 dead letter(s) back in the queue" in edge("--requeue")
    assert "0 dead letter(s)" in edge()
    assert DetectionSpool(spool_path, max_bytes=1 << 20).depth == 2
