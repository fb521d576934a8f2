"""Replays a list of picture files as if a camera had just taken them (tests, demo, field checks)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trapline.edge.sources.base import Frame, FrameSource, IsProcessed

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class ReplaySourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["replay"] = "replay"
    files: list[Path] = Field(
        default_factory=list, description="pictures to replay, in order; folders are expanded"
    )
    count: int | None = Field(None, gt=0, description="frames to produce in all, cycling through the files")
    interval_s: float = Field(0.0, ge=0, description="pause between frames")
    burst_size: int | None = Field(
        None, gt=0, description="frames per simulated trigger; a longer pause follows each burst"
    )
    burst_pause_s: float = Field(0.0, ge=0, description="pause after each burst")
    run_name: str = Field(
        "replay", pattern=r"^[A-Za-z0-9_.-]+$", description="makes frame keys unique per run"
    )
    synthetic_start: datetime | None = Field(
        None,
        description="give frames made-up capture times from this instant on (demo, tests): bursts"
        " spread over days and nights, night (infrared) pictures at night hours, each burst one"
        " picture taken burst_size times; unset: the real clock",
    )
    synthetic_seed: int = Field(0, description="the made-up times are the same for the same seed")
    synthetic_mean_gap_h: float = Field(5.0, gt=0, description="mean hours between made-up bursts")

    @model_validator(mode="after")
    def _has_files(self) -> ReplaySourceConfig:
        if not self.expanded():
            raise ValueError("replay source has no picture files")
        return self

    def expanded(self) -> list[Path]:
        paths: list[Path] = []
        for entry in self.files:
            if entry.is_dir():
                paths.extend(sorted(p for p in entry.rglob("*") if p.is_file()))
            else:
                paths.append(entry)
        return paths


# made-up local hours: infrared pictures between dusk and dawn, colour ones in daylight
_NIGHT_HOURS = (19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5)
_DAY_HOURS = (7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


class SyntheticClock:
    """Deterministic capture times: each burst some hours after the last (exponential gaps), at a
    night hour for an infrared picture and a day hour for a colour one; frames 1 s apart within."""

    def __init__(self, start: datetime, seed: int, mean_gap_h: float) -> None:
        self._random = random.Random(seed)  # noqa: S311 - made-up times, not security
        self._mean_gap_h = mean_gap_h
        self._last = start
        self._burst_start = start

    def burst(self, night: bool) -> None:
        """Start a new burst; its first frame's time follows."""
        earliest = self._last + timedelta(hours=self._random.expovariate(1 / self._mean_gap_h))
        hours = _NIGHT_HOURS if night else _DAY_HOURS
        at = earliest
        while at.hour not in hours:  # the next hour that suits the picture's light
            at += timedelta(hours=1)
        self._burst_start = at.replace(minute=self._random.randrange(60), second=self._random.randrange(60))
        self._last = self._burst_start

    def frame(self, index_in_burst: int) -> datetime:
        self._last = self._burst_start + timedelta(seconds=index_in_burst)
        return self._last


def _is_night_picture(data: bytes) -> bool:
    from trapline.edge.imaging import BadImageError, decode_image, is_night

    try:
        return is_night(decode_image(data, 100_000_000))
    except BadImageError:
        return False


class ReplaySource(FrameSource):
    def __init__(self, config: ReplaySourceConfig) -> None:
        self.config = config
        self.files = config.expanded()
        self._clock = (
            SyntheticClock(config.synthetic_start, config.synthetic_seed, config.synthetic_mean_gap_h)
            if config.synthetic_start
            else None
        )
        self._night: dict[Path, bool] = {}

    def _captured_at(self, index: int, path: Path, data: bytes) -> datetime:
        if self._clock is None:
            return datetime.now(UTC)
        burst = self.config.burst_size or 1
        if index % burst == 0:
            if path not in self._night:
                self._night[path] = _is_night_picture(data)
            self._clock.burst(self._night[path])
        return self._clock.frame(index % burst)

    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        total = self.config.count or len(self.files)
        for index in range(total):
            if stop.is_set():
                return
            # with made-up times a burst is one picture taken burst_size times, as a camera's is
            step = index // (self.config.burst_size or 1) if self._clock else index
            path = self.files[step % len(self.files)]
            key = f"{self.config.run_name}:{index}:{path.name}"
            done = is_processed(key)
            if done and self._clock is None:
                continue
            try:
                data = path.read_bytes()
            except OSError:
                data = b""  # an unreadable file is bad input like any other
            captured_at = self._captured_at(index, path, data)  # the clock runs on over done frames
            if done:
                continue
            yield Frame(
                key=key,
                name=path.name,
                captured_at=captured_at,
                data=data,
                path=path,
                owned=False,
            )
            burst = self.config.burst_size
            if burst and (index + 1) % burst == 0 and self.config.burst_pause_s:
                stop.wait(self.config.burst_pause_s)
            elif self.config.interval_s:
                stop.wait(self.config.interval_s)
