"""YOLOv8 pre- and post-processing in numpy/OpenCV, matching Ultralytics' own predict.

Pre: letterbox to the model's input (centred, grey 114 padding), BGR->RGB, 0-1 floats, then the
layout (NCHW/NHWC) and quantization the input tensor wants. Post: dequantize, decode the
(4 + classes) x anchors head, class-aware NMS, and undo the letterbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from trapline.edge.backends.base import TensorSpec

PAD_VALUE = 114
# Ultralytics offsets boxes by class * this so one NMS pass never suppresses across classes.
_CLASS_OFFSET = 7680.0
_MAX_NMS_CANDIDATES = 30000


@dataclass(frozen=True)
class Letterbox:
    gain: float
    pad_left: int
    pad_top: int
    source_width: int
    source_height: int


def letterbox(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad to height x width, as Ultralytics' LetterBox does."""
    h0, w0 = image.shape[:2]
    gain = min(height / h0, width / w0)
    new_w, new_h = round(w0 * gain), round(h0 * gain)
    if (new_w, new_h) != (w0, h0):
        # as Ultralytics loads photos for validation: area averaging when shrinking (no aliasing,
        # and a photo decoded at reduced JPEG scale ends up with the same pixels as a full one)
        shrinking = new_w < w0 or new_h < h0
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    canvas = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return canvas, Letterbox(gain, left, top, w0, h0)


def to_input_tensor(canvas_bgr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The letterboxed BGR uint8 image as the tensor the model wants (layout, dtype, quantization)."""
    if not spec.quantized and spec.dtype == np.float32 and not spec.channels_last:
        # the common FP32 NCHW case in one C++ pass (swap, scale, transpose)
        return cv2.dnn.blobFromImage(canvas_bgr, 1 / 255.0, swapRB=True)
    rgb = cv2.cvtColor(canvas_bgr, cv2.COLOR_BGR2RGB)
    if spec.quantized:
        if spec.dtype == np.int8 and abs(spec.scale - 1 / 255) < 1e-7 and spec.zero_point == -128:
            tensor = (rgb.astype(np.int16) - 128).astype(np.int8)  # exact, and 5x cheaper
        else:
            info = np.iinfo(spec.dtype)
            q = np.round(rgb.astype(np.float32) / 255.0 / spec.scale + spec.zero_point)
            tensor = np.clip(q, info.min, info.max).astype(spec.dtype)
    else:
        tensor = rgb.astype(spec.dtype)
        tensor *= np.asarray(1 / 255.0, dtype=spec.dtype)
    if not spec.channels_last:
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None])


@dataclass(frozen=True)
class RawDetections:
    """Boxes in source-image pixels (x1, y1, x2, y2), with confidence and class index."""

    boxes: np.ndarray  # (n, 4) float32
    confs: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int64

    def __len__(self) -> int:
        return len(self.confs)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over xyxy boxes (torchvision.ops.nms semantics: suppress IoU > threshold)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        xx1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(
    output: np.ndarray,
    spec: TensorSpec,
    num_classes: int,
    input_height: int,
    input_width: int,
    normalized_boxes: bool,
    conf_threshold: float | np.ndarray,
    iou_threshold: float,
    max_det: int,
    box: Letterbox,
    nms_groups: np.ndarray | None = None,
) -> RawDetections:
    """Turn the raw (1, 4 + classes, anchors) head output into boxes on the source image.

    `conf_threshold`: one threshold, or one per class (a box's class is its best-scoring one).
    `nms_groups`: per class, the group NMS runs within (default: each class its own, as
    Ultralytics does); classes published as one category share a group, so a deer scored both
    "cow" and "horse" by a COCO-class model gives one animal box, not two.
    """
    pred = output[0]
    if spec.quantized:
        pred = (pred.astype(np.float32) - spec.zero_point) * spec.scale
    if pred.shape[0] != 4 + num_classes:  # (anchors, 4 + classes) layout
        pred = pred.T
    scores = pred[4:]
    confs = scores.max(axis=0)
    per_class = np.asarray(conf_threshold, np.float32)
    candidates = np.flatnonzero(confs > per_class.min())
    if per_class.ndim and candidates.size:
        best = scores[:, candidates].argmax(axis=0)
        candidates = candidates[confs[candidates] > per_class[best]]
    if candidates.size > _MAX_NMS_CANDIDATES:
        candidates = candidates[np.argsort(-confs[candidates])[:_MAX_NMS_CANDIDATES]]
    xywh = pred[:4, candidates].T.astype(np.float32)
    if normalized_boxes:
        xywh *= np.asarray([input_width, input_height, input_width, input_height], np.float32)
    xyxy = np.empty_like(xywh)
    xyxy[:, :2] = xywh[:, :2] - xywh[:, 2:] / 2
    xyxy[:, 2:] = xywh[:, :2] + xywh[:, 2:] / 2
    class_ids = scores[:, candidates].argmax(axis=0)
    confs = confs[candidates].astype(np.float32)
    groups = class_ids if nms_groups is None else nms_groups[class_ids]
    keep = nms(xyxy + groups[:, None] * _CLASS_OFFSET, confs, iou_threshold)[:max_det]
    xyxy, confs, class_ids = xyxy[keep], confs[keep], class_ids[keep]
    # undo the letterbox, then clip to the source image
    xyxy -= np.asarray([box.pad_left, box.pad_top, box.pad_left, box.pad_top], np.float32)
    xyxy /= box.gain
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, box.source_width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, box.source_height)
    return RawDetections(xyxy, confs, class_ids.astype(np.int64))
