"""TFLite backends: LiteRT (`ai-edge-litert`, preferred) and `tflite-runtime` (the fallback).

Both packages ship the same `Interpreter` API, so one class runs either; each subclass names only
the module its interpreter comes from, and is registered under its own key.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import zipfile
from typing import Any, ClassVar

import numpy as np

from trapline.edge.backends.base import BackendInfo, InferenceBackend, ModelLoadError, TensorSpec


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


class TfliteBackend(InferenceBackend):
    """A .tflite model in the `Interpreter` of `interpreter_module`."""

    interpreter_module: ClassVar[str]

    @classmethod
    def available(cls) -> bool:
        package = cls.interpreter_module.partition(".")[0]
        return importlib.util.find_spec(package) is not None

    def _load(self) -> BackendInfo:
        interpreter_cls = importlib.import_module(self.interpreter_module).Interpreter
        try:
            # from the bytes that were verified; the interpreter reads them from self.content
            self.interpreter = interpreter_cls(model_content=self.content, num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.path}: not a loadable TFLite model ({exc})") from exc
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        return BackendInfo(_spec(self._input), _spec(self._output), embedded_metadata(self.content))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input["index"], tensor)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self._output["index"]))


class LiteRtBackend(TfliteBackend):
    key = "litert"
    interpreter_module = "ai_edge_litert.interpreter"


class TfliteRuntimeBackend(TfliteBackend):
    key = "tflite-runtime"
    interpreter_module = "tflite_runtime.interpreter"
