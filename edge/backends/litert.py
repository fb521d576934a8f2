"""LiteRT (`ai-edge-litert`) backend: the preferred runtime for .tflite models."""

from __future__ import annotations

import importlib.util

import numpy as np

from trapline.edge.backends._tflite_common import TfliteInterpreterRunner
from trapline.edge.backends.base import BackendInfo, InferenceBackend


class LiteRtBackend(InferenceBackend):
    key = "litert"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("ai_edge_litert") is not None

    def _load(self) -> BackendInfo:
        from ai_edge_litert.interpreter import Interpreter

        self._runner = TfliteInterpreterRunner(Interpreter, self.path, self.threads, self.content)
        return self._runner.info

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self._runner.run(tensor)
