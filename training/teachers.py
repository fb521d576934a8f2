"""`trapline train teacher`: run a teacher detector over photos; write MegaDetector batch JSON.

Two kinds of teacher:
- `yolox`: MegadetectorLite (DrivenData, YOLOX-tiny ONNX, one class `animal`) with its own
  pre/post-processing (training.yolox);
- `yolov8`: a YOLOv8 file the trap can run (.onnx/.tflite), through the trap's own Detector; a COCO
  model gives `person` and `vehicle` boxes that MegadetectorLite cannot.

The output is MegaDetector's batch format 1.4 (`info.detector` names the teacher), so everything
that reads MegaDetector output reads it. Every box in it is a model's output, not ground truth.
As MegaDetector's run_detector_batch does, results are checkpointed atomically every
`checkpoint_every` images, a rerun resumes where the last one stopped, and an image that cannot
be read is recorded as a `failure` instead of stopping the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from trapline.files import atomic_write

log = logging.getLogger(__name__)

TeacherKind = Literal["yolox", "yolov8"]
MD_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
_MD_IDS = {name: key for key, name in MD_CATEGORIES.items()}
TeacherDetection = tuple[str, float, tuple[float, float, float, float], str | None]
DetectFn = Callable[[np.ndarray], list[TeacherDetection]]


def teacher_detector(model: Path, kind: TeacherKind, min_conf: float, threads: int = 2) -> DetectFn:
    """A function image -> [(category, conf, MD bbox, the model's own class name)] for the teacher."""
    if kind == "yolox":
        from trapline.training.yolox import YoloxDetector

        yolox = YoloxDetector(model, threads, min_conf)
        return lambda image: [(b.category, b.conf, b.bbox, None) for b in yolox.detect(image)]
    from trapline.edge.detector import Detector

    detector = Detector(model, threads=threads, conf_threshold=min_conf)
    info = detector.info

    def detect(image: np.ndarray) -> list[TeacherDetection]:
        raw = detector.detect(image).raw
        height, width = image.shape[:2]
        out: list[TeacherDetection] = []
        for (x1, y1, x2, y2), conf, class_id in zip(raw.boxes, raw.confs, raw.class_ids, strict=True):
            category = info.categories[int(class_id)]
            if category is not None:
                bbox = (
                    float(x1) / width,
                    float(y1) / height,
                    float(x2 - x1) / width,
                    float(y2 - y1) / height,
                )
                out.append((category, float(conf), bbox, info.class_names[int(class_id)]))
        return out

    return detect


def _detection(category: str, conf: float, bbox: tuple[float, ...], name: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "category": _MD_IDS[category],
        "conf": round(conf, 4),
        "bbox": [round(v, 4) for v in bbox],
    }
    if name is not None:  # the teacher's own class (a COCO class), as a MegaDetector classification
        entry["classifications"] = [[name, round(conf, 4)]]
    return entry


def _checkpoint(out: Path, detector: str, images: dict[str, dict[str, Any]]) -> None:
    names = sorted(
        {
            c[0]
            for image in images.values()
            for d in image.get("detections") or []
            for c in d.get("classifications", [])
        }
    )
    body = {
        "info": {
            "format_version": "1.4",
            "detector": detector,
            "detection_completion_time": datetime.now(UTC).isoformat(timespec="seconds"),
            "note": "teacher model output, not ground truth",
        },
        "detection_categories": MD_CATEGORIES,
        **({"classification_categories": {name: name for name in names}} if names else {}),
        "images": [images[k] for k in sorted(images)],
    }
    atomic_write(out, json.dumps(body, indent=1).encode())


def run_teacher(
    root: Path,
    files: list[str],
    model: Path,
    kind: TeacherKind,
    out: Path,
    min_conf: float = 0.05,
    checkpoint_every: int = 25,
) -> Path:
    """Teacher boxes (conf >= `min_conf`) for `files` (relative to `root`), resuming from `out`."""
    done: dict[str, dict[str, Any]] = {}
    if out.is_file():
        done = {image["file"]: image for image in json.loads(out.read_text())["images"]}
    todo = [f for f in files if f not in done]
    if not todo:
        return out
    if done:
        log.info("%s: resuming, %d of %d images already done", out.name, len(done), len(files))
    detect = teacher_detector(model, kind, min_conf)
    out.parent.mkdir(parents=True, exist_ok=True)
    detector_name = f"{model.name} ({kind} teacher)"
    for count, file in enumerate(tqdm(todo, desc=f"teacher {model.name}", unit="img"), 1):
        image = cv2.imread(str(root / file))
        if image is None:
            done[file] = {"file": file, "failure": "image could not be read", "detections": None}
        else:
            done[file] = {
                "file": file,
                "detections": [
                    _detection(category, conf, bbox, name)
                    for category, conf, bbox, name in detect(image)
                    if category in _MD_IDS
                ],
            }
        if count % checkpoint_every == 0:
            _checkpoint(out, detector_name, done)
    _checkpoint(out, detector_name, done)
    return out


def read_teacher(path: Path) -> dict[str, list[tuple[str, float, tuple[float, float, float, float]]]]:
    """file -> [(category, conf, bbox)] from a teacher's (or MegaDetector's) batch JSON."""
    data = json.loads(path.read_text())
    names = data.get("detection_categories", MD_CATEGORIES)
    return {
        image["file"]: [
            (names[d["category"]], float(d["conf"]), tuple(d["bbox"])) for d in image.get("detections") or []
        ]
        for image in data["images"]
        if image.get("detections") is not None
    }


def read_teacher_classes(path: Path) -> dict[str, list[tuple[tuple[float, float, float, float], str, float]]]:
    """file -> [(bbox, the teacher's own class name, conf)] where the teacher recorded its class."""
    data = json.loads(path.read_text())
    return {
        image["file"]: [
            (tuple(d["bbox"]), str(c[0]), float(c[1]))
            for d in image.get("detections") or []
            for c in d.get("classifications", [])[:1]
        ]
        for image in data["images"]
        if image.get("detections") is not None
    }
