"""The INT8 recipe's stable parts: which nodes stay float, and the calibration reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.conftest import SAMPLES
from trapline.export.onnx_int8 import LetterboxCalibration, float_nodes

# node names as Ultralytics' YOLOv8 ONNX export writes them
NAMES = [
    ("/model.0/conv/Conv", "Conv"),  # stem: float
    ("/model.2/cv1/conv/Conv", "Conv"),  # backbone: int8
    ("/model.22/cv2.0/cv2.0.0/conv/Conv", "Conv"),  # head branch, inner conv: int8
    ("/model.22/cv2.0/cv2.0.2/Conv", "Conv"),  # head branch, final 1x1 (box distribution): float
    ("/model.22/cv3.1/cv3.1.2/Conv", "Conv"),  # head branch, final 1x1 (class logits): float
    ("/model.22/dfl/Softmax", "Softmax"),  # decode: float
    ("/model.22/Concat_5", "Concat"),  # decode: float
]


def _graph() -> onnx.ModelProto:
    nodes = []
    previous = "images"
    for index, (name, op) in enumerate(NAMES):
        output = f"t{index}"
        # Identity stands in for every op: float_nodes reads only names and op types
        nodes.append(helper.make_node("Identity", [previous], [output], name=name))
        nodes[-1].op_type = op
        previous = output
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 3, 32, 32])
    return helper.make_model(helper.make_graph(nodes, "yolo-names", [x], [y]))


def test_stem_head_decode_and_final_head_convs_stay_float() -> None:
    assert float_nodes(_graph()) == [
        "/model.0/conv/Conv",
        "/model.22/cv2.0/cv2.0.2/Conv",
        "/model.22/cv3.1/cv3.1.2/Conv",
        "/model.22/dfl/Softmax",
        "/model.22/Concat_5",
    ]


def test_calibration_feeds_letterboxed_real_photos_and_skips_unreadable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    photos = [SAMPLES / "squirrel-frame105534.jpg", broken, SAMPLES / "cougar-39858-0.jpg"]
    reader = LetterboxCalibration(photos, "images", 96, 128)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch["images"])
    assert len(batches) == 2  # the unreadable file is skipped, not fed as zeros
    for tensor in batches:
        assert tensor.shape == (1, 3, 96, 128) and tensor.dtype == np.float32
        assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    # the cougar frame is 16:9: letterboxing pads top and bottom with the grey Ultralytics uses
    assert np.allclose(batches[1][0, :, 0, :], 114 / 255, atol=1e-6)
