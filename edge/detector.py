"""A loaded YOLOv8 model ready to run on frames: backend + model info + pre/post-processing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trapline.bundle import BundleError
from trapline.contracts import Detection
from trapline.edge.backends import InferenceBackend, ModelLoadError, load_backend
from trapline.edge.model_info import ModelInfo
from trapline.edge.yolo import Letterbox, RawDetections, decode, letterbox, to_input_tensor
from trapline.formats import format_for_path
from trapline.manifest import Thresholds
from trapline.model_source import ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    raw: RawDetections
    detections: list[Detection]
    inference_ms: float
    # the model's raw output, kept so boxes below the threshold can be read without running it again
    output: np.ndarray | None = None
    letterbox: Letterbox | None = None


class Detector:
    """Runs one model. Thresholds default to the model's own (manifest), overridable per trap.

    `model` is a resolved `ModelSource` (a verified bundle: see trapline.model_source), or the path
    of a bare model file (development, tests)."""

    def __init__(
        self,
        model: Path | ModelSource,
        backend: str = "auto",
        threads: int = 2,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
    ) -> None:
        if isinstance(model, Path):
            try:
                format_for_path(model)  # an unknown suffix says so before anything is read
                model = ModelSource.unbundled(model)
            except (BundleError, ValueError) as exc:
                raise ModelLoadError(str(exc)) from exc
        model_path = model.path
        self.backend: InferenceBackend = load_backend(model_path, backend, threads, model.content)
        try:
            self.info = ModelInfo.gather(model, self.backend.info.metadata, self.backend.info.input.shape)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        base = self.info.thresholds
        self.thresholds = Thresholds(
            conf=base.conf if conf_threshold is None else conf_threshold,
            iou=base.iou if iou_threshold is None else iou_threshold,
            max_det=base.max_det,
        )
        self._normalized_boxes = format_for_path(model_path).normalized_boxes
        self._check_output_shape()
        self._warm_up()
        log.info(
            "loaded %s v%s (%s, %dx%d, %d classes) with %s",
            self.info.name,
            self.info.version,
            model_path.name,
            self.info.input_width,
            self.info.input_height,
            len(self.info.class_names),
            self.backend.key,
        )

    def _check_output_shape(self) -> None:
        shape = self.backend.info.output.shape
        expected = 4 + len(self.info.class_names)
        if len(shape) != 3 or expected not in shape[1:]:
            raise ModelLoadError(
                f"{self.backend.path}: output shape {shape} is not a YOLOv8 detection head for"
                f" {len(self.info.class_names)} classes (expected (1, {expected}, anchors))"
            )

    def _warm_up(self) -> None:
        # the first run allocates and picks kernels: pay for it now, not on the first real frame
        grey = np.full((self.info.input_height, self.info.input_width, 3), 114, np.uint8)
        self.detect(grey)

    def detect(self, image_bgr: np.ndarray) -> FrameResult:
        canvas, box = letterbox(image_bgr, self.info.input_height, self.info.input_width)
        tensor = to_input_tensor(canvas, self.backend.info.input)
        started = time.perf_counter()
        output = self.backend.run(tensor)
        inference_ms = (time.perf_counter() - started) * 1000.0
        raw = self._decode(output, box, self.thresholds.conf)
        detections = self._to_contract(raw, box.source_width, box.source_height)
        return FrameResult(raw, detections, inference_ms, output, box)

    def _decode(self, output: np.ndarray, box: Letterbox, conf: float) -> RawDetections:
        return decode(
            output,
            self.backend.info.output,
            len(self.info.class_names),
            self.info.input_height,
            self.info.input_width,
            self._normalized_boxes,
            conf,
            self.thresholds.iou,
            self.thresholds.max_det,
            box,
        )

    def below_threshold(self, result: FrameResult, floor: float) -> list[Detection]:
        """The boxes of an already run frame scoring in [floor, threshold): what the model nearly
        reported. NMS keeps the same boxes above the threshold either way (a box is suppressed only
        by a better one), so these are exactly the extra boxes a lower threshold would add."""
        if result.output is None or result.letterbox is None or floor >= self.thresholds.conf:
            return []
        box = result.letterbox
        raw = self._decode(result.output, box, floor)
        weaker = [d for d in self._to_contract(raw, box.source_width, box.source_height)
                  if d.conf < self.thresholds.conf]  # fmt: skip
        return weaker

    def _to_contract(self, raw: RawDetections, width: int, height: int) -> list[Detection]:
        detections = []
        for (x1, y1, x2, y2), conf, class_id in zip(raw.boxes, raw.confs, raw.class_ids, strict=True):
            category = self.info.categories[int(class_id)]
            if category is None:
                continue
            bbox = (
                round(float(x1) / width, 4),
                round(float(y1) / height, 4),
                round(float(x2 - x1) / width, 4),
                round(float(y2 - y1) / height, 4),
            )
            # rounding may push x + w a hair past 1.0
            bbox = (bbox[0], bbox[1], min(bbox[2], 1.0 - bbox[0]), min(bbox[3], 1.0 - bbox[1]))
            detections.append(Detection(category=category, conf=round(float(conf), 4), bbox=bbox))
        return detections
