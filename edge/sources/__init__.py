"""Frame sources, one module each, with a `type` key and a config class; config picks one."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from trapline.edge.sources.base import Frame, FrameSource, IsProcessed, SourceUnavailableError
from trapline.edge.sources.folder import FolderSource, FolderSourceConfig
from trapline.edge.sources.opencv import OpenCvSource, OpenCvSourceConfig
from trapline.edge.sources.picamera import PiCameraSource, PiCameraSourceConfig
from trapline.edge.sources.replay import ReplaySource, ReplaySourceConfig

SourceConfig = Annotated[
    FolderSourceConfig | OpenCvSourceConfig | PiCameraSourceConfig | ReplaySourceConfig,
    Field(discriminator="type"),
]

_SOURCES: dict[type, type[FrameSource]] = {
    FolderSourceConfig: FolderSource,
    OpenCvSourceConfig: OpenCvSource,
    PiCameraSourceConfig: PiCameraSource,
    ReplaySourceConfig: ReplaySource,
}

__all__ = [
    "Frame",
    "FrameSource",
    "IsProcessed",
    "SourceConfig",
    "SourceUnavailableError",
    "make_source",
]


def make_source(config: SourceConfig) -> FrameSource:
    return _SOURCES[type(config)](config)  # type: ignore[call-arg]
