from __future__ import annotations

import numpy as np
import pytest

from trapline.edge.backends import TensorSpec
from trapline.edge.yolo import Letterbox, RawDetections, decode, letterbox, to_input_tensor

FLOAT_NCHW = TensorSpec((1, 3, 64, 64), np.dtype(np.float32))


def test_letterbox_centres_and_pads_with_grey() -> None:
    image = np.zeros((100, 200, 3), np.uint8)  # wide: padding goes above and below
    canvas, box = letterbox(image, 64, 64)
    assert canvas.shape == (64, 64, 3)
    assert box == Letterbox(gain=0.32, pad_left=0, pad_top=16, source_width=200, source_height=100)
    assert (canvas[:16] == 114).all() and (canvas[48:] == 114).all()
    assert (canvas[16:48] == 0).all()


def test_int8_input_rounds_to_nearest_step() -> None:
    canvas = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    spec = TensorSpec((1, 16, 16, 3), np.dtype(np.int8), scale=1 / 255, zero_point=-128)
    tensor = to_input_tensor(canvas, spec)
    assert tensor.dtype == np.int8 and tensor.shape == (1, 16, 16, 3)
    assert tensor.min() == -128 and tensor.max() == 127
    generic = TensorSpec((1, 16, 16, 3), np.dtype(np.int8), scale=0.5 / 255, zero_point=0)
    halved = to_input_tensor(canvas, generic)  # 2 steps per grey level, clipped at 127
    assert halved[0, 0, 1, 0] == 2 and halved.max() == 127


def test_float_input_is_rgb_nchw_in_unit_range() -> None:
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[..., 0] = 255  # blue in BGR
    tensor = to_input_tensor(canvas, FLOAT_NCHW)
    assert tensor.shape == (1, 3, 64, 64)
    assert tensor[0, 2].max() == 1.0 and tensor[0, 0].max() == 0.0  # blue ends up last


def _head(boxes: list[tuple[float, float, float, float, int, float]], classes: int = 3) -> np.ndarray:
    out = np.zeros((1, 4 + classes, len(boxes)), np.float32)
    for i, (cx, cy, w, h, cls, conf) in enumerate(boxes):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = conf
    return out


IDENTITY = Letterbox(1.0, 0, 0, 64, 64)


def _decode(out: np.ndarray, spec: TensorSpec = FLOAT_NCHW, normalized: bool = False) -> RawDetections:
    return decode(out, spec, out.shape[1] - 4, 64, 64, normalized, 0.25, 0.5, 300, IDENTITY)


def test_nms_suppresses_within_a_class_but_not_across_classes() -> None:
    out = _head([
        (20, 20, 10, 10, 0, 0.9),
        (21, 20, 10, 10, 0, 0.8),  # same class, IoU 0.82: suppressed
        (21, 20, 10, 10, 1, 0.7),  # other class, same place: kept
        (50, 50, 8, 8, 2, 0.2),  # below threshold
    ])  # fmt: skip
    raw = _decode(out)
    assert raw.class_ids.tolist() == [0, 1]
    assert raw.confs.tolist() == pytest.approx([0.9, 0.7])
    assert raw.boxes[0].tolist() == pytest.approx([15, 15, 25, 25])


def test_normalized_and_quantized_heads_decode_to_the_same_boxes() -> None:
    pixel = _head([(32, 16, 16, 8, 1, 0.75)])
    normalized = pixel.copy()
    normalized[0, :4] /= 64
    spec = TensorSpec((1, 7, 1), np.dtype(np.int8), scale=1 / 256, zero_point=-128)
    quantized = np.clip(np.round(normalized / spec.scale + spec.zero_point), -128, 127).astype(np.int8)
    expected = [24, 12, 40, 20]
    assert _decode(pixel).boxes[0].tolist() == pytest.approx(expected)
    assert _decode(normalized, normalized=True).boxes[0].tolist() == pytest.approx(expected)
    assert _decode(quantized, spec, normalized=True).boxes[0].tolist() == pytest.approx(expected, abs=0.2)


def test_boxes_are_mapped_back_through_the_letterbox_and_clipped() -> None:
    box = Letterbox(gain=0.32, pad_left=0, pad_top=16, source_width=200, source_height=100)
    out = _head([(60, 32, 10, 40, 0, 0.9)])  # reaches into the top and bottom padding
    raw = decode(out, FLOAT_NCHW, 3, 64, 64, False, 0.25, 0.5, 300, box)
    assert raw.boxes[0].tolist() == pytest.approx([171.875, 0.0, 200.0, 100.0])


def test_per_class_thresholds_apply_to_each_box_by_its_class() -> None:
    out = _head([
        (20, 20, 10, 10, 0, 0.5),  # animal 0.5: over its 0.4
        (40, 40, 10, 10, 0, 0.35),  # animal 0.35: under its 0.4
        (20, 45, 10, 10, 1, 0.35),  # person 0.35: over its 0.3
        (45, 15, 10, 10, 2, 0.6),  # vehicle 0.6: under its 0.7
    ])  # fmt: skip
    thresholds = np.asarray([0.4, 0.3, 0.7], np.float32)
    raw = decode(out, FLOAT_NCHW, 3, 64, 64, False, thresholds, 0.5, 300, IDENTITY)
    assert raw.class_ids.tolist() == [0, 1]
    assert raw.confs.tolist() == pytest.approx([0.5, 0.35])


def test_nms_groups_suppress_across_classes_of_one_category() -> None:
    out = _head([(20, 20, 10, 10, 0, 0.9), (21, 20, 10, 10, 1, 0.8), (21, 20, 10, 10, 2, 0.7)])
    groups = np.asarray([0, 0, 2])  # classes 0 and 1 are one category (say "cow" and "horse": animal)
    raw = decode(out, FLOAT_NCHW, 3, 64, 64, False, 0.25, 0.5, 300, IDENTITY, groups)
    assert raw.class_ids.tolist() == [0, 2]
