"""What every feature extractor offers: a key, a dimension, and crops in -> features out."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class WeightsMissingError(RuntimeError):
    """The extractor's weights are not on this machine and could not be fetched; the message
    names the file to provide."""


class FeatureExtractor(Protocol):
    key: str  # names the feature space: features of different keys never mix
    description: str  # for the report: model, weights, runtime
    dim: int

    def extract(self, crops: np.ndarray) -> np.ndarray:
        """(N, 224, 224, 3) RGB uint8 -> (N, dim) float32."""
        ...


def imagenet_tensor(crops: np.ndarray) -> np.ndarray:
    """RGB uint8 NHWC -> ImageNet-normalised float32 NCHW."""
    scaled = crops.astype(np.float32) / 255.0
    return np.ascontiguousarray(((scaled - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2))


def batch_session_options(threads: int | None) -> Any:
    """ONNX Runtime options for a batch job on a shared server: `threads` intra-op threads that
    sleep while they wait. Spinning threads save microseconds on an idle machine, but on a busy one
    they burn the cores the other threads need (measured: ResNet-152 at batch 1 on 2 loaded cores,
    1.4 crops/s spinning vs 2.1 not)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    return options
