"""INT8 LiteRT models from a float TFLite export, with ai-edge-quantizer recipes (mixed precision).

Full-integer quantization of YOLOv8 loses the most where values span very different ranges in one
tensor: the head's decode (DFL softmax, anchor arithmetic, and the final concatenation of 0-1 box
coordinates with class scores), and to a lesser degree the head's last 1x1 convolutions (box
distributions and class logits) and the stem convolution, which sees raw pixels. The recipes below
quantize everything to INT8 (weights per channel, activations per tensor, calibrated min/max) and
keep more of those parts in float, or give them 16-bit activations; `trapline export` measures each.

Calibration frames are letterboxed exactly as on the trap (edge.yolo) and drawn from the training
split in equal shares of day, night and empty photos (export.calibration).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trapline.edge.backends.base import TensorSpec
from trapline.edge.yolo import letterbox, to_input_tensor

log = logging.getLogger(__name__)

# tensor names in Ultralytics' litert-torch export carry the module path
HEAD = r".*Detect_22.*"
HEAD_DECODE = (
    r".*Detect_22(;|/ultralytics\.nn\.modules\.block\.DFL_dfl).*|.*_NormalizeCoords;.*|serving_default.*"
)
HEAD_LAST_CONV = (
    r".*Detect_22/torch\.nn\.modules\.container\.Sequential_\d/torch\.nn\.modules\.conv\.Conv2d_2.*"
)
STEM = r".*DetectionModel_model/ultralytics\.nn\.modules\.conv\.Conv_0/.*"


def _static(regex: str, activation_bits: int) -> dict[str, Any]:
    return {
        "regex": regex,
        "operation": "*",
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "activation_tensor_config": {
                "num_bits": activation_bits,
                "symmetric": activation_bits == 16,  # int16 activations must be symmetric
                "granularity": "TENSORWISE",
                "dtype": "INT",
            },
            "weight_tensor_config": {
                "num_bits": 8,
                "symmetric": True,
                "granularity": "CHANNELWISE",
                "dtype": "INT",
            },
            "compute_precision": "INTEGER",
            "explicit_dequantize": False,
            "skip_checks": False,
            "min_weight_elements": 0,
        },
    }


def _float(regex: str) -> dict[str, Any]:
    return {"regex": regex, "operation": "*", "algorithm_key": "no_quantize"}


# name -> recipe (a list of rules; later rules win where their regex matches)
RECIPES: dict[str, list[dict[str, Any]]] = {
    "int8-full": [_static(".*", 8)],
    "int8-float-decode": [_static(".*", 8), _float(HEAD_DECODE)],
    "int8-float-decode-lastconv": [_static(".*", 8), _float(HEAD_DECODE), _float(HEAD_LAST_CONV)],
    "int8-float-head-stem": [_static(".*", 8), _float(HEAD), _float(STEM)],
    "int8-a16-head": [_static(".*", 8), _static(HEAD, 16), _float(HEAD_DECODE)],
}
DEFAULT_RECIPE = "int8-float-decode-lastconv"


def calibration_tensors(images: list[Path], spec: TensorSpec) -> list[np.ndarray]:
    height, width = (spec.shape[2], spec.shape[3]) if not spec.channels_last else spec.shape[1:3]
    tensors = []
    for path in images:
        image = cv2.imread(str(path))
        if image is None:
            log.warning("calibration: cannot read %s", path)
            continue
        canvas, _ = letterbox(image, height, width)
        tensors.append(to_input_tensor(canvas, spec))
    if not tensors:
        raise ValueError("LiteRT INT8 calibration needs photos; none could be read")
    return tensors


def quantize_litert(
    fp32: Path,
    out: Path,
    calibration_images: list[Path],
    recipe: str = DEFAULT_RECIPE,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Quantize the float TFLite model `fp32` with the named recipe; Ultralytics' metadata (class
    names, image size) is carried over so the model still describes itself."""
    from ai_edge_quantizer import quantizer

    from trapline.edge.backends import load_backend
    from trapline.edge.backends.tflite import embedded_metadata

    spec = load_backend(fp32).info.input
    tensors = calibration_tensors(calibration_images, spec)
    engine = quantizer.Quantizer(str(fp32), RECIPES[recipe])
    if progress:
        progress(f"calibrating {recipe} on {len(tensors)} photos")
    signature = "serving_default"
    from ai_edge_litert.interpreter import Interpreter

    input_name = Interpreter(model_path=str(fp32)).get_signature_list()[signature]["inputs"][0]
    calibration = engine.calibrate({signature: [{input_name: t} for t in tensors]}, num_threads=2)
    result = engine.quantize(calibration, enable_progress_report=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(result.quantized_model))
    _append_metadata(out, embedded_metadata(fp32.read_bytes()))
    log.info("%s: %s, %.1f MB", out.name, recipe, out.stat().st_size / 1e6)
    return out


def _append_metadata(model: Path, metadata: dict[str, Any]) -> None:
    """Ultralytics appends a zip holding metadata.json to its .tflite files; do the same."""
    if not metadata:
        return
    import json
    import zipfile

    with zipfile.ZipFile(model, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
