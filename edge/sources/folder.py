"""A folder the trap camera writes JPEGs into: new files are picked up once completely written."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trapline.edge.sources.base import Frame, FrameSource, IsProcessed

log = logging.getLogger(__name__)

# files a camera or a copy tool is still writing under a temporary name
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")


class FolderSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = "folder"
    path: Path = Field(description="folder the camera writes pictures into (searched recursively)")
    poll_interval_s: float = Field(1.0, gt=0, description="how often to look for new files")
    settle_s: float = Field(2.0, ge=0, description="a file counts as complete once unchanged for this long")


@dataclass
class _Folder:
    """What the last scan saw in one folder. A quiet folder held only processed files: it is
    listed again only when its mtime changes (a file added, renamed or removed)."""

    mtime_ns: int
    subfolders: list[Path]
    done: set[str]  # keys of files already processed, so the spool is asked once per file
    quiet: bool


def _key(relative: str, stat: os.stat_result) -> str:
    return f"folder:{relative}:{stat.st_size}:{stat.st_mtime_ns}"


def _parse_key(key: str) -> tuple[str, int, int] | None:
    """(relative path, size, mtime_ns) of a key made by `_key`."""
    head, _, rest = key.partition(":")
    relative, _, signature = rest.rpartition(":")
    relative, _, size = relative.rpartition(":")
    if head != "folder" or not relative or not size.isdigit() or not signature.isdigit():
        return None
    return relative, int(size), int(signature)


class FolderSource(FrameSource):
    def __init__(self, config: FolderSourceConfig) -> None:
        self.config = config
        # path -> (size, mtime_ns, first seen unchanged at)
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._folders: dict[Path, _Folder] = {}

    def _list(self, folder: Path) -> tuple[list[Path], list[tuple[Path, os.stat_result]]]:
        subfolders, files = [], []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        subfolders.append(Path(entry.path))
                    elif entry.is_file() and not entry.name.lower().endswith(_PARTIAL_SUFFIXES):
                        files.append((Path(entry.path), entry.stat()))
                except FileNotFoundError:  # moved away between listing and stat
                    continue
        return sorted(subfolders), files

    def _candidates(self, is_processed: IsProcessed) -> list[tuple[Path, os.stat_result, str]]:
        """Files not processed yet, oldest first."""
        found = []
        stack = [self.config.path]
        visited: set[Path] = set()
        while stack:
            folder = stack.pop()
            visited.add(folder)
            try:
                mtime_ns = folder.stat().st_mtime_ns
            except FileNotFoundError:
                self._folders.pop(folder, None)
                continue
            known = self._folders.get(folder)
            if known is not None and known.quiet and known.mtime_ns == mtime_ns:
                stack.extend(known.subfolders)
                continue
            subfolders, files = self._list(folder)
            previously_done = known.done if known else set()
            done, new = set(), []
            for path, stat in files:
                key = _key(path.relative_to(self.config.path).as_posix(), stat)
                if key in previously_done or is_processed(key):
                    done.add(key)
                else:
                    new.append((path, stat, key))
            self._folders[folder] = _Folder(mtime_ns, subfolders, done, quiet=not new)
            found.extend(new)
            stack.extend(subfolders)
        # folders removed with their parent are never stat'ed again: forget them (bounded memory)
        for gone in self._folders.keys() - visited:
            del self._folders[gone]
        found.sort(key=lambda item: (item[1].st_mtime_ns, str(item[0])))
        return found

    def still_present(self, key: str) -> bool:
        """The file this key was made from is still there, unchanged: its mark must be kept."""
        parsed = _parse_key(key)
        if parsed is None:
            return False
        relative, size, mtime_ns = parsed
        try:
            stat = (self.config.path / relative).stat()
        except OSError:
            return False
        return stat.st_size == size and stat.st_mtime_ns == mtime_ns

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
            for path, stat, key in self._candidates(is_processed):
                if not self._ready(path, stat, now):
                    continue
                relative = path.relative_to(self.config.path).as_posix()
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
