"""The one table of model formats, shared by `export/` (what to write) and `edge/` (what to load).

A backend key names the runtime that runs a format on the trap; the list order is the preference
order when several runtimes are installed (LiteRT before the old tflite-runtime, which is ~10x slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFormat:
    key: str
    suffix: str
    backends: tuple[str, ...]
    description: str
    # TFLite exports divide box coordinates by the input size; ONNX ones keep pixels.
    normalized_boxes: bool


MODEL_FORMATS: tuple[ModelFormat, ...] = (
    ModelFormat("onnx", ".onnx", ("onnxruntime",), "ONNX (FP32 or INT8 QDQ/ConvInteger)", False),
    ModelFormat("tflite", ".tflite", ("litert", "tflite-runtime"), "TFLite (FP32 or INT8)", True),
)


def format_for_path(path: Path) -> ModelFormat:
    """The format of a model file, from its suffix; ValueError naming the known ones otherwise."""
    for fmt in MODEL_FORMATS:
        if path.suffix.lower() == fmt.suffix:
            return fmt
    known = ", ".join(f.suffix for f in MODEL_FORMATS)
    raise ValueError(f"{path}: unknown model format {path.suffix!r} (known: {known})")
