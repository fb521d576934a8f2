"""The Raspberry Pi camera through picamera2 (only importable on a Pi)."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field

from trapline.edge.sources.base import Frame, FrameSource, IsProcessed, SourceUnavailableError
from trapline.edge.sources.encoded import encoded_frame

log = logging.getLogger(__name__)


class PiCameraSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["picamera"] = "picamera"
    width: int = Field(2028, gt=0, description="capture width in pixels")
    height: int = Field(1520, gt=0, description="capture height in pixels")
    interval_s: float = Field(1.0, ge=0, description="seconds between processed frames")
    reopen_backoff_s: float = Field(5.0, gt=0, description="wait before reopening a failed camera")
    jpeg_quality: int = Field(90, ge=10, le=100, description="quality of the frame's stored JPEG")


class PiCameraSource(FrameSource):
    def __init__(self, config: PiCameraSourceConfig) -> None:
        self.config = config
        self._camera: Any = None

    def _open(self) -> Any:
        try:
            picamera2 = importlib.import_module("picamera2")
        except ImportError as exc:
            raise SourceUnavailableError("picamera2 is not installed (not a Raspberry Pi?)") from exc
        try:
            camera = picamera2.Picamera2()
            size = (self.config.width, self.config.height)
            camera.configure(camera.create_still_configuration(main={"size": size, "format": "RGB888"}))
            camera.start()
        except Exception as exc:  # libcamera raises plain RuntimeErrors and more
            raise SourceUnavailableError(f"cannot start the Pi camera: {exc}") from exc
        return camera

    def frames(self, stop: threading.Event, is_processed: IsProcessed) -> Iterator[Frame | None]:
        while not stop.is_set():
            if self._camera is None:
                try:
                    self._camera = self._open()
                except SourceUnavailableError as exc:
                    log.error("%s; retrying in %.0f s", exc, self.config.reopen_backoff_s)
                    yield None
                    stop.wait(self.config.reopen_backoff_s)
                    continue
            try:
                rgb = self._camera.capture_array("main")
            except Exception as exc:  # a camera that dies mid-run
                log.error("Pi camera capture failed: %s; reopening", exc)
                self.close()
                yield None
                continue
            # picamera2's "RGB888" is BGR in memory order, as OpenCV wants
            image = rgb if rgb.shape[-1] == 3 else cv2.cvtColor(rgb, cv2.COLOR_BGRA2BGR)
            yield encoded_frame("picam", image, datetime.now(UTC), self.config.jpeg_quality)
            yield None
            stop.wait(self.config.interval_s)

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None
