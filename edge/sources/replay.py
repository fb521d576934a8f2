"""Replays a list of picture files as if a camera had just taken them (tests, demo, field checks)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
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


class ReplaySource(FrameSource):
    def __init__(self, config: ReplaySourceConfig) -> None:
        self.config = config
        self.files = config.expanded()

    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        total = self.config.count or len(self.files)
        for index in range(total):
            if stop.is_set():
                return
            path = self.files[index % len(self.files)]
            key = f"{self.config.run_name}:{index}:{path.name}"
            if is_processed(key):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                data = b""  # an unreadable file is bad input like any other
            yield Frame(
                key=key,
                name=path.name,
                captured_at=datetime.now(UTC),
                data=data,
                path=path,
                owned=False,
            )
            burst = self.config.burst_size
            if burst and (index + 1) % burst == 0 and self.config.burst_pause_s:
                stop.wait(self.config.burst_pause_s)
            elif self.config.interval_s:
                stop.wait(self.config.interval_s)
