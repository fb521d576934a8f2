from __future__ import annotations

import sys
import threading
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import SAMPLES
from trapline.edge.sources import Frame, make_source
from trapline.edge.sources.folder import FolderSource, FolderSourceConfig
from trapline.edge.sources.opencv import OpenCvSourceConfig
from trapline.edge.sources.picamera import PiCameraSourceConfig
from trapline.edge.sources.replay import ReplaySourceConfig


def _next_frame(frames: Any, limit: int = 50) -> Frame | None:
    for _ in range(limit):
        frame: Frame | None = next(frames)
        if frame is not None:
            return frame
    return None


def test_folder_source_waits_until_a_file_is_completely_written(tmp_path: Path) -> None:
    photo = (SAMPLES / "cougar-39858-0.jpg").read_bytes()
    partial = tmp_path / "IMG_0001.JPG"
    partial.write_bytes(photo[:1000])  # the camera is still writing
    source = make_source(FolderSourceConfig(path=tmp_path, poll_interval_s=0.05, settle_s=0.3))
    frames = source.frames(threading.Event(), lambda key: False)
    assert next(frames) is None  # seen, but not settled yet
    partial.write_bytes(photo)  # now complete
    frame = _next_frame(frames)
    assert frame is not None and frame.data == photo and frame.owned
    assert frame.name == "IMG_0001.JPG"


def test_folder_source_skips_processed_and_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "done.jpg").write_bytes(b"x")
    (tmp_path / "new.jpg").write_bytes(b"y")
    (tmp_path / "upload.jpg.part").write_bytes(b"z")
    (tmp_path / ".hidden.jpg").write_bytes(b"z")
    source = make_source(FolderSourceConfig(path=tmp_path, poll_interval_s=0.01, settle_s=0))
    frames = source.frames(threading.Event(), lambda key: key.startswith("folder:done.jpg"))
    frame = _next_frame(frames)
    assert frame is not None and frame.name == "new.jpg"
    assert next(frames) is None


def test_replay_source_cycles_files_with_stable_keys(tmp_path: Path) -> None:
    config = ReplaySourceConfig(files=[SAMPLES], count=10, run_name="t")
    keys = [f.key for f in make_source(config).frames(threading.Event(), lambda k: False) if f]
    assert len(keys) == 10 and len(set(keys)) == 10
    again = [f.key for f in make_source(config).frames(threading.Event(), lambda k: k in keys[:7]) if f]
    assert again == keys[7:]


def test_replay_with_made_up_times_spreads_bursts_over_days_and_nights() -> None:
    night, day = SAMPLES / "buow-IMG_8968.jpg", SAMPLES / "squirrel-frame105534.jpg"  # IR and colour
    start = datetime(2026, 11, 1, tzinfo=UTC)
    config = ReplaySourceConfig(files=[night, day], count=60, burst_size=3, run_name="t",
                                synthetic_start=start, synthetic_seed=7, synthetic_mean_gap_h=6)  # fmt: skip
    frames = [f for f in make_source(config).frames(threading.Event(), lambda k: False) if f]
    times = [f.captured_at for f in frames]
    assert times == sorted(times) and times[0] > start
    assert times[-1] - times[0] > timedelta(days=3)  # 20 bursts, hours apart
    for burst in range(20):
        first, *rest = frames[burst * 3 : burst * 3 + 3]
        assert {f.name for f in rest} == {first.name}  # one picture per burst
        assert [(f.captured_at - first.captured_at).total_seconds() for f in rest] == [1.0, 2.0]
        hour = first.captured_at.hour
        assert (hour >= 19 or hour <= 5) if first.name == night.name else (7 <= hour <= 17), (
            first.name,
            hour,
        )
    # deterministic, and a restart skips done frames without moving the times of the rest
    again = [
        f
        for f in make_source(config).frames(threading.Event(), lambda k: k in {f.key for f in frames[:30]})
        if f
    ]
    assert [f.captured_at for f in again] == times[30:]


def test_replay_source_needs_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no picture files"):
        ReplaySourceConfig(files=[tmp_path])


def test_picamera_source_captures_through_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    # the one mock in the suite: there is no Pi camera here
    captured = np.full((120, 160, 3), 77, np.uint8)

    class FakePicamera2:
        def create_still_configuration(self, main: dict[str, Any]) -> dict[str, Any]:
            return main

        def configure(self, config: dict[str, Any]) -> None:
            self.config = config

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def close(self) -> None: ...

        def capture_array(self, stream: str) -> np.ndarray:
            return captured

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    source = make_source(PiCameraSourceConfig(interval_s=0))
    frame = _next_frame(source.frames(threading.Event(), lambda k: False))
    assert frame is not None and frame.image is captured
    assert frame.data is not None and frame.data[:2] == b"\xff\xd8"
    source.close()


def test_picamera_source_without_picamera2_keeps_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails
    stop = threading.Event()
    source = make_source(PiCameraSourceConfig(reopen_backoff_s=0.01))
    frames = source.frames(stop, lambda k: False)
    assert [next(frames) for _ in range(3)] == [None, None, None]


def test_opencv_source_reads_a_stream_and_survives_a_lost_one(tmp_path: Path) -> None:
    import cv2

    # a real video file stands in for an RTSP stream: VideoCapture treats both alike
    video = tmp_path / "stream.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5, (320, 240))
    for n in range(3):
        writer.write(np.full((240, 320, 3), 40 * n, np.uint8))
    writer.release()
    source = make_source(OpenCvSourceConfig(device=str(video), interval_s=0, reopen_backoff_s=0.01))
    stop = threading.Event()
    frames = source.frames(stop, lambda k: False)
    got = [f for f in (next(frames) for _ in range(6)) if f is not None]
    assert len(got) == 3
    assert got[0].image is not None and got[0].image.shape == (240, 320, 3)
    assert got[0].data is not None and got[0].data[:2] == b"\xff\xd8"
    assert len({f.key for f in got}) == 3
    # the stream ends (a dropped RTSP link): an idle tick, then the source reopens and goes on
    assert next(frames) is None
    again = next(f for f in (next(frames) for _ in range(4)) if f is not None)
    assert again.key not in {f.key for f in got}
    assert source.read_failures == 1  # type: ignore[attr-defined]
    source.close()
    missing = make_source(OpenCvSourceConfig(device=str(tmp_path / "nope.avi"), reopen_backoff_s=0.01))
    assert next(missing.frames(stop, lambda k: False)) is None


def test_folder_source_asks_the_spool_once_per_file_and_skips_quiet_folders(tmp_path: Path) -> None:
    # a camera card with many old, processed photos: polling must not re-check them all each second
    for folder in ("100RECNX", "101RECNX"):
        (tmp_path / folder).mkdir()
        for n in range(50):
            (tmp_path / folder / f"IMG_{n:04d}.JPG").write_bytes(b"old")
    asked: list[str] = []

    def processed(key: str) -> bool:
        asked.append(key)
        return "IMG_" in key and "NEW" not in key

    source = make_source(FolderSourceConfig(path=tmp_path, poll_interval_s=0.01, settle_s=0))
    frames = source.frames(threading.Event(), processed)
    assert next(frames) is None  # first poll: everything checked once, nothing new
    assert len(asked) == 100
    for _ in range(5):
        assert next(frames) is None
    assert len(asked) == 100  # later polls: not a single spool lookup
    (tmp_path / "101RECNX" / "IMG_NEW1.JPG").write_bytes(b"new")
    frame = _next_frame(frames)
    assert frame is not None
    assert frame.name == "101RECNX/IMG_NEW1.JPG"
    assert len(asked) == 101  # only the new file was looked up; the other folder stayed quiet


def test_folder_source_keeps_marks_of_files_still_there_and_forgets_removed_folders(tmp_path: Path) -> None:
    for folder in ("100", "101"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "IMG_0001.JPG").write_bytes(b"x" * 10)
    source = make_source(FolderSourceConfig(path=tmp_path, poll_interval_s=0.01, settle_s=0))
    assert isinstance(source, FolderSource)
    frames = source.frames(threading.Event(), lambda key: False)
    keys = [frame.key for frame in (_next_frame(frames), _next_frame(frames)) if frame is not None]
    assert len(keys) == 2
    assert all(source.still_present(key) for key in keys)
    kept = next(k for k in keys if "100/" in k)
    (tmp_path / "100" / "IMG_0001.JPG").write_bytes(b"y" * 11)  # replaced: another file now
    assert not source.still_present(kept)
    assert not source.still_present("replay:0:IMG_0001.JPG") and not source.still_present("folder:bad")
    # a card swapped: the folders went, and the scan forgets them (memory stays bounded)
    (tmp_path / "100" / "IMG_0001.JPG").unlink()
    (tmp_path / "100").rmdir()
    for _ in range(3):  # finish the current pass, then scan again
        next(frames)
    assert tmp_path / "100" not in source._folders and tmp_path / "101" in source._folders
