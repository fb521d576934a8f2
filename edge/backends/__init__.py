"""Inference backends, one module each, registered by key; the model file's format picks one."""

from __future__ import annotations

from pathlib import Path

from trapline.edge.backends.base import BackendInfo, InferenceBackend, ModelLoadError, TensorSpec
from trapline.edge.backends.onnxruntime import OnnxRuntimeBackend
from trapline.edge.backends.tflite import LiteRtBackend, TfliteRuntimeBackend
from trapline.formats import format_for_path

BACKENDS: dict[str, type[InferenceBackend]] = {
    cls.key: cls for cls in (OnnxRuntimeBackend, LiteRtBackend, TfliteRuntimeBackend)
}

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "InferenceBackend",
    "ModelLoadError",
    "TensorSpec",
    "load_backend",
]


def load_backend(
    path: Path, backend: str = "auto", threads: int = 2, content: bytes | None = None
) -> InferenceBackend:
    """Load `path` (or `content`, the model's bytes) with the named backend, or the first
    installed one that runs its format."""
    try:
        fmt = format_for_path(path)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    candidates = fmt.backends if backend == "auto" else (backend,)
    for key in candidates:
        if key not in fmt.backends:
            raise ModelLoadError(f"backend {key!r} cannot run {fmt.key} models ({path})")
        if BACKENDS[key].available():
            return BACKENDS[key](path, threads, content)
    raise ModelLoadError(f"no runtime installed for {path.name}: install one of {', '.join(candidates)}")
