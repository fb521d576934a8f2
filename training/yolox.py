"""MegadetectorLite (DrivenData's YOLOX-tiny, ONNX): pre- and post-processing exactly as zamba runs it.

RGB, resized to fit 640x640 keeping the aspect ratio (bicubic), placed in the top-left corner on
black, float32 0-255 NCHW. Output (1, 8400, 6): cx, cy, w, h in input pixels, objectness, class
probability; score = objectness x class; NMS at IoU 0.45 (not in the graph). One class: animal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trapline.edge.yolo import nms

log = logging.getLogger(__name__)

INPUT_SIZE = 640
NMS_IOU = 0.45


@dataclass(frozen=True)
class TeacherBox:
    category: str
    conf: float
    bbox: tuple[float, float, float, float]  # MegaDetector convention, 0-1


class YoloxDetector:
    """One ONNX YOLOX model; `detect` returns every box at or above `min_conf`."""

    def __init__(self, model: Path, threads: int = 2, min_conf: float = 0.05) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.min_conf = min_conf
        self.name = model.name

    @staticmethod
    def preprocess(image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = image_bgr.shape[:2]
        ratio = min(INPUT_SIZE / height, INPUT_SIZE / width)
        resized = cv2.resize(
            image_bgr, (int(width * ratio), int(height * ratio)), interpolation=cv2.INTER_CUBIC
        )
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized[:, :, ::-1]
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32), ratio

    def detect(self, image_bgr: np.ndarray) -> list[TeacherBox]:
        tensor, ratio = self.preprocess(image_bgr)
        pred = np.asarray(self.session.run(None, {self.input_name: tensor})[0])[0]
        scores = pred[:, 4] * pred[:, 5]
        keep = scores >= self.min_conf
        pred, scores = pred[keep], scores[keep]
        xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], axis=1)
        xyxy /= ratio
        height, width = image_bgr.shape[:2]
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        boxes = []
        for index in nms(xyxy.astype(np.float32), scores.astype(np.float32), NMS_IOU):
            x1, y1, x2, y2 = (float(v) for v in xyxy[index])
            bbox = (x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height)
            boxes.append(TeacherBox("animal", float(scores[index]), bbox))
        return boxes
