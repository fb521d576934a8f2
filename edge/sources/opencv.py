"""An OpenCV capture device (USB camera index) or a network stream (RTSP/HTTP URL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trapline.edge.sources.base import Frame, FrameSource, IsProcessed, SourceUnavailableError
from trapline.edge.sources.encoded import encoded_frame

log = logging.getLogger(__name__)


class OpenCvSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["opencv"] = "opencv"
    device: int | str = Field(0, description="camera index, or an rtsp:// / http:// stream URL")
    interval_s: float = Field(1.0, ge=0, description="seconds between processed frames")
    reopen_backoff_s: float = Field(5.0, gt=0, description="wait before reopening a lost camera")
    jpeg_quality: int = Field(90, ge=10, le=100, description="quality of the frame's stored JPEG")


class OpenCvSource(FrameSource):
    def __init__(self, config: OpenCvSourceConfig) -> None:
        self.config = config
        self._capture: Any = None
        self.read_failures = 0

    def _open(self) -> Any:
        import cv2

        capture = cv2.VideoCapture(self.config.device)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailableError(f"cannot open camera/stream {self.config.device!r}")
        return capture

    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        while not stop.is_set():
            if self._capture is None:
                try:
                    self._capture = self._open()
                except SourceUnavailableError as exc:
                    self.read_failures += 1
                    log.error("%s; retrying in %.0f s", exc, self.config.reopen_backoff_s)
                    yield None
                    stop.wait(self.config.reopen_backoff_s)
                    continue
            ok, image = self._capture.read()
            if not ok or image is None:
                self.read_failures += 1
                log.error("camera/stream %r returned no frame; reopening", self.config.device)
                self.close()
                yield None
                continue
            captured_at = datetime.now(UTC)
            yield encoded_frame("cam", image, captured_at, self.config.jpeg_quality)
            yield None
            stop.wait(self.config.interval_s)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
