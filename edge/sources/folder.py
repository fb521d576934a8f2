"""A folder the trap camera writes JPEGs into: new files are picked up once completely written."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sources.base import Frame, FrameSource, IsProcessed

log = logging.getLogger(__name__)

# files a camera or a copy tool is still writing under a temporary name
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


class FolderSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = "folder"
    path: Path = Field(description="folder the camera writes pictures into (searched recursively)")
    poll_interval_s: float = Field(1.0, gt=0, description="how often to look for new files")
    settle_s: float = Field(2.0, ge=0, description="a file counts as complete once unchanged for this long")


class FolderSource(FrameSource):
    def __init__(self, config: FolderSourceConfig) -> None:
        self.config = config
        # path -> (size, mtime_ns, first seen unchanged at)
        self._pending: dict[Path, tuple[int, int, float]] = {}

    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        found = []
        for root, dirs, files in os.walk(self.config.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if name.startswith(".") or name.lower().endswith(_PARTIAL_SUFFIXES):
                    continue
                path = Path(root) / name
                try:
                    found.append((path, path.stat()))
                except FileNotFoundError:  # moved away between listing and stat
                    continue
        found.sort(key=lambda item: (item[1].st_mtime_ns, str(item[0])))
        return found

    def _ready(self, path: Path, stat: os.stat_result, now: float) -> bool:
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self._pending.get(path)
        if previous is None or previous[:2] != signature:
            self._pending[path] = (*signature, now)
            return self.config.settle_s == 0
        return now - previous[2] >= self.config.settle_s

    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        self.config.path.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            now = time.monotonic()
            for path, stat in self._candidates():
                relative = path.relative_to(self.config.path).as_posix()
                key = f"folder:{relative}:{stat.st_size}:{stat.st_mtime_ns}"
                if is_processed(key) or not self._ready(path, stat, now):
                    continue
                self._pending.pop(path, None)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    log.warning("cannot read %s: %s", path, exc)
                    continue
                yield Frame(
                    key=key,
                    name=relative,
                    captured_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                    data=data,
                    path=path,
                    owned=True,
                )
                if stop.is_set():
                    return
            # forget files that disappeared
            self._pending = {p: v for p, v in self._pending.items() if p.exists()}
            yield None
            stop.wait(self.config.poll_interval_s)
