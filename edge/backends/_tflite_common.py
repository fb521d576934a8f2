"""What the two TFLite runtimes (LiteRT and tflite-runtime) share: the same Interpreter API."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trapline.edge.backends.base import BackendInfo, ModelLoadError, TensorSpec


def embedded_metadata(content: bytes) -> dict[str, Any]:
    """Ultralytics appends a zip holding metadata.json to its .tflite exports; read it if there."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return dict(json.loads(archive.read("metadata.json")))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return {}


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        tuple(int(d) for d in detail["shape"]),
        np.dtype(detail["dtype"]),
        float(scale),
        int(zero_point),
    )


class TfliteInterpreterRunner:
    """Wraps an `Interpreter` class from either package."""

    def __init__(self, interpreter_cls: Any, path: Path, threads: int, content: bytes) -> None:
        self._content = content  # the interpreter reads the model from this buffer: keep it alive
        try:
            self.interpreter = interpreter_cls(model_content=content, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.info = BackendInfo(_spec(self._input), _spec(self._output), embedded_metadata(content))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input["index"], tensor)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self._output["index"]))
