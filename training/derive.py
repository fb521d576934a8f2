"""Boxes derived from teacher models where people gave only image-level labels (distillation).

Policy, per photo:
- verified empty (a person or a file name says so): no boxes, whatever a teacher sees there (the
  teacher's false boxes on logs and stumps are exactly the hard negatives the student must learn);
- a label names classes that have no box yet: each such class takes the boxes of the teacher
  trusted for it at or above that teacher's threshold (MegadetectorLite for animals, the COCO model
  for people and vehicles); a class still without a box leaves the photo ambiguous (kept out of box
  training and box metrics, kept for image-level metrics);
- no label at all: the teachers decide; MegadetectorLite boxes that sit on a COCO person/vehicle box
  take its class; nothing above `ignore_below` makes a (teacher-)empty photo; boxes between
  `ignore_below` and the threshold make it ambiguous.
Every derived box has `derived=True` and names its teacher; photos labelled by teachers alone are
`teacher_only`.

Thresholds (`auto`) are chosen on the human image-level labels of the train and val sites only,
never on test: the highest one whose balanced accuracy (mean of recall on photos with the class
and specificity on photos without it) is within `TIE_TOLERANCE` of the best (where accuracy is
flat, the stricter threshold makes cleaner boxes). For the animal teacher, the photos
without the class are the verified empties: on vehicle and person photos MegadetectorLite boxes
the vehicle or person, and the COCO teacher's boxes are used there instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from trapline.training.boxes import md_iou
from trapline.training.records import ImageRecord, LabelBox, record_key

log = logging.getLogger(__name__)

TeacherBoxes = list[tuple[str, float, tuple[float, float, float, float]]]
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
TIE_TOLERANCE = 0.01


@dataclass
class Teacher:
    name: str
    classes: tuple[str, ...]
    boxes: dict[str, TeacherBoxes]  # record key -> boxes
    threshold: float
    ignore_below: float

    def best(self, key: str) -> float:
        return max((conf for cat, conf, _ in self.boxes.get(key, []) if cat in self.classes), default=0.0)

    def labels(self, key: str) -> list[LabelBox]:
        return [
            LabelBox(category=cat, bbox=bbox, conf=conf, source=f"teacher:{self.name}", derived=True)
            for cat, conf, bbox in self.boxes.get(key, [])
            if cat in self.classes and conf >= self.threshold
        ]


@dataclass(frozen=True)
class ThresholdChoice:
    teacher: str
    threshold: float
    positives: int
    negatives: int
    curve: list[dict[str, float]] = field(default_factory=list)


def choose_threshold(teacher: Teacher, records: list[ImageRecord], splits: dict[str, str]) -> ThresholdChoice:
    """Best balanced accuracy on human image-level labels outside the test split (module doc)."""
    scores, truth = [], []
    classes = set(teacher.classes)
    for record in records:
        if record.present is None or record.present_source != "human":
            continue
        if splits.get(record_key(record)) == "test":
            continue
        has = bool(classes & set(record.present))
        if "animal" in classes and not has and record.present:
            continue  # vehicle/person photos: not negatives for the animal teacher (module doc)
        scores.append(teacher.best(record_key(record)))
        truth.append(has)
    score, positive = np.asarray(scores), np.asarray(truth, bool)
    if not positive.any() or positive.all():
        raise ValueError(
            f"cannot choose a threshold for {teacher.name}: needs human-labelled photos with and"
            f" without {sorted(classes)} outside the test split"
        )
    curve = []
    for threshold in THRESHOLD_GRID:
        called = score >= threshold
        recall = float(called[positive].mean())
        specificity = float((~called[~positive]).mean())
        curve.append(
            {
                "threshold": float(threshold),
                "recall": recall,
                "specificity": specificity,
                "balanced_accuracy": (recall + specificity) / 2,
            }  # fmt: skip
        )
    top = max(p["balanced_accuracy"] for p in curve)
    best = max(
        (p for p in curve if p["balanced_accuracy"] >= top - TIE_TOLERANCE), key=lambda p: p["threshold"]
    )
    return ThresholdChoice(
        teacher.name, best["threshold"], int(positive.sum()), int((~positive).sum()), curve
    )


def _unlabelled(record: ImageRecord, key: str, teachers: list[Teacher]) -> None:
    boxes: list[LabelBox] = []
    unsure = False
    others = [t for t in teachers if "animal" not in t.classes]
    for teacher in teachers:
        for box in teacher.labels(key):
            if box.category == "animal":
                # a MegadetectorLite box on a COCO person/vehicle is that person or vehicle
                for other in others:
                    hits = [b for b in other.labels(key) if md_iou(b.bbox, box.bbox) >= 0.5]
                    if hits:
                        box = box.model_copy(update={"category": hits[0].category})
                        break
            if not any(md_iou(box.bbox, b.bbox) >= 0.7 and box.category == b.category for b in boxes):
                boxes.append(box)
        best = teacher.best(key)
        unsure = unsure or teacher.ignore_below <= best < teacher.threshold
    record.labelled = True
    record.teacher_only = True
    record.boxes = boxes
    record.ambiguous = not boxes and unsure


def derive(records: list[ImageRecord], teachers: list[Teacher]) -> Counter[str]:
    """Apply the module's policy in place; returns counts of what happened."""
    counts: Counter[str] = Counter()
    for record in records:
        key = record_key(record)
        if any(not b.source.startswith(("megadetector", "teacher")) for b in record.boxes):
            counts["human boxes"] += 1
            continue
        if record.present == []:
            counts["verified empty"] += 1
            continue
        if record.present:
            boxed = {b.category for b in record.boxes}
            for cls in sorted(set(record.present) - boxed):
                for teacher in teachers:
                    if cls in teacher.classes:
                        record.boxes.extend(b for b in teacher.labels(key) if b not in record.boxes)
            boxed = {b.category for b in record.boxes}
            record.ambiguous = not set(record.present) <= boxed
            counts["labelled, boxes derived" if not record.ambiguous else "labelled, no teacher box"] += 1
            continue
        if record.labelled:
            counts["megadetector only"] += 1
            continue
        _unlabelled(record, key, teachers)
        counts[
            "teacher only: " + ("unsure" if record.ambiguous else "boxes" if record.boxes else "empty")
        ] += 1
    return counts
