"""`tflite-runtime` backend: the fallback for .tflite models where LiteRT is not installed."""

from __future__ import annotations

import importlib.util

import numpy as np

from trapline.edge.backends._tflite_common import TfliteInterpreterRunner
from trapline.edge.backends.base import BackendInfo, InferenceBackend


class TfliteRuntimeBackend(InferenceBackend):
    key = "tflite-runtime"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("tflite_runtime") is not None

    def _load(self) -> BackendInfo:
        from tflite_runtime.interpreter import Interpreter

        self._runner = TfliteInterpreterRunner(Interpreter, self.path, self.threads, self.content)
        return self._runner.info

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self._runner.run(tensor)
