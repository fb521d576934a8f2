"""What every inference backend offers: one tensor in, one tensor out, plus what it knows of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable, or not a model this backend can run."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape, dtype and affine quantization (real = scale * (q - zero_point)) of one tensor."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    @property
    def channels_last(self) -> bool:
        return len(self.shape) == 4 and self.shape[-1] == 3


@dataclass
class BackendInfo:
    input: TensorSpec
    output: TensorSpec
    metadata: dict[str, Any] = field(default_factory=dict)


class InferenceBackend(ABC):
    """A runtime holding one loaded model. `run` takes and returns raw (possibly int8) tensors.

    The model is loaded from `content` (the bytes a bundle's verification hashed), read from
    `path` once when not given; `path` then only names it."""

    key: ClassVar[str]

    def __init__(self, path: Path, threads: int, content: bytes | None = None) -> None:
        if content is None:
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"model file not found or unreadable: {path} ({exc})") from exc
        self.path = path
        self.threads = threads
        self.content = content
        self.info = self._load()

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """True when this backend's runtime can be imported here."""

    @abstractmethod
    def _load(self) -> BackendInfo: ...

    @abstractmethod
    def run(self, tensor: np.ndarray) -> np.ndarray: ...
