"""What a frame source yields, and the interface every source implements."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured picture.

    `key` is stable across restarts, so a frame that was spooled is never processed twice;
    `owned` files belong to the trap (a camera folder) and may be moved to quarantine.
    """

    key: str
    name: str
    captured_at: datetime
    data: bytes | None = None
    image: np.ndarray | None = None
    path: Path | None = None
    owned: bool = False


IsProcessed = Callable[[str], bool]


class FrameSource(ABC):
    """Yields frames, or None when idle (so the agent can do timed work), until stopped."""

    @abstractmethod
    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        """Frames not yet processed. Returns when exhausted (replay) or when `stop` is set."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release the camera or stream."""

    def still_present(self, key: str) -> bool:
        """Would the frame with this key be offered again if its "done" mark were forgotten? Only
        sources that re-read stored files (a camera folder) say yes; a live camera never does."""
        return False


class SourceUnavailableError(RuntimeError):
    """The camera or stream cannot be opened now; the agent logs it and retries."""
