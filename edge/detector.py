"""A loaded YOLOv8 model ready to run on frames: backend + model info + pre/post-processing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
        loaded: InferenceBackend | None = None,
        nms_by: Literal["category", "class"] = "category",
    ) -> None:
        """`model`: see the class; `conf_threshold` (a trap's override) replaces the model's
        thresholds for every class; `loaded`: an already loaded backend (evaluation runs PyTorch
        checkpoints this way); `nms_by`: suppress overlapping boxes within a published category
        (default) or within a class, as Ultralytics does."""
        if isinstance(model, Path):
            try:
                if loaded is None:
                    format_for_path(model)  # an unknown suffix says so before anything is read
                model = ModelSource.unbundled(model)
            except (BundleError, ValueError) as exc:
                raise ModelLoadError(str(exc)) from exc
        model_path = model.path
        self.backend: InferenceBackend = loaded or load_backend(model_path, backend, threads, model.content)
        try:
            self.info = ModelInfo.gather(model, self.backend.info.metadata, self.backend.info.input.shape)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        base = self.info.thresholds
        self.thresholds = Thresholds(
            conf=base.conf if conf_threshold is None else conf_threshold,
            iou=base.iou if iou_threshold is None else iou_threshold,
            max_det=base.max_det,
            per_class=base.per_class if conf_threshold is None else {},
            target_precision=base.target_precision if conf_threshold is None else None,
        )
        # per class index: the manifest's per-class threshold, else the default one
        self.class_thresholds = np.asarray(
            [
                self.thresholds.for_class(name, category)
                for name, category in zip(self.info.class_names, self.info.categories, strict=True)
            ],
            np.float32,
        )
        self._nms_groups: np.ndarray | None = None
        if nms_by == "category":
            first: dict[str | None, int] = {}
            self._nms_groups = np.asarray(
                [first.setdefault(c, i) if c is not None else i for i, c in enumerate(self.info.categories)],
                np.int64,
            )
        try:
            self._normalized_boxes = format_for_path(model_path).normalized_boxes
        except ValueError:
            self._normalized_boxes = False  # a PyTorch checkpoint under evaluation: pixel boxes
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

    def prepare(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The model's input tensor for a photo, and how to map boxes back onto it. Pure OpenCV and
        numpy, so the agent runs it for the next frame while this one is in inference."""
        canvas, box = letterbox(image_bgr, self.info.input_height, self.info.input_width)
        return to_input_tensor(canvas, self.backend.info.input), box

    def detect(self, image_bgr: np.ndarray) -> FrameResult:
        return self.detect_prepared(*self.prepare(image_bgr))

    def detect_prepared(self, tensor: np.ndarray, box: Letterbox) -> FrameResult:
        started = time.perf_counter()
        output = self.backend.run(tensor)
        inference_ms = (time.perf_counter() - started) * 1000.0
        raw = self._decode(output, box, self.class_thresholds)
        detections = self._to_contract(raw, box.source_width, box.source_height)
        return FrameResult(raw, detections, inference_ms, output, box)

    def _decode(self, output: np.ndarray, box: Letterbox, conf: float | np.ndarray) -> RawDetections:
        """`conf`: one threshold, or one per class (`class_thresholds`)."""
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
            self._nms_groups,
        )

    def below_threshold(self, result: FrameResult, floor: float) -> list[Detection]:
        """The boxes of an already run frame scoring in [floor, threshold): what the model nearly
        reported. NMS keeps the same boxes above the threshold either way (a box is suppressed only
        by a better one), so these are exactly the extra boxes a lower threshold would add. "The
        threshold" is each class's own (the manifest's per-class thresholds)."""
        if result.output is None or result.letterbox is None or floor >= float(self.class_thresholds.max()):
            return []
        box = result.letterbox
        raw = self._decode(result.output, box, floor)
        weaker = raw.confs < self.class_thresholds[raw.class_ids.astype(np.int64)]
        raw = RawDetections(raw.boxes[weaker], raw.confs[weaker], raw.class_ids[weaker])
        return self._to_contract(raw, box.source_width, box.source_height)

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
