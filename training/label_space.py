"""Training in the COCO label space: every box named by the COCO class the COCO teacher gives it.

Fine-tuning YOLOv8n on 3 classes replaces its whole class branch (Ultralytics sizes the branch by the
number of classes: 80 -> 64 channels), so what COCO taught it about birds, cats or bears is lost and
has to be relearnt from a few hundred photos. Naming each box in the model's own 80 classes keeps the
pretrained head, class branch included; the bundle's manifest maps the COCO classes onto the
published categories (edge.model_info.COCO_CATEGORIES), as for the COCO stand-in.
"""

from __future__ import annotations

from collections import Counter

from trapline.training.boxes import md_iou
from trapline.training.records import ImageRecord, record_key

Classes = dict[str, list[tuple[tuple[float, float, float, float], str, float]]]
FALLBACK = {"animal": "dog", "person": "person", "vehicle": "car"}
MATCH_IOU = 0.5


def assign_coco_classes(
    records: list[ImageRecord], teacher: Classes, categories: dict[str, str | None]
) -> Counter[str]:
    """Give every box the class of the COCO teacher's best-overlapping box of its category; a box
    the teacher did not see takes its category's most frequent class. Returns the classes used."""
    unmatched = []
    for record in records:
        seen = teacher.get(record_key(record), [])
        for index, box in enumerate(record.boxes):
            same = [
                (md_iou(box.bbox, bbox), conf, name)
                for bbox, name, conf in seen
                if categories.get(name) == box.category
            ]
            best = max(((iou, conf, name) for iou, conf, name in same if iou >= MATCH_IOU), default=None)
            if best is None:
                unmatched.append((record, index))
            else:
                record.boxes[index] = box.model_copy(update={"coco_class": best[2]})
    used = Counter(b.coco_class for r in records for b in r.boxes if b.coco_class)
    for record, index in unmatched:
        box = record.boxes[index]
        counts = Counter({n: c for n, c in used.items() if categories.get(n) == box.category})
        name = counts.most_common(1)[0][0] if counts else FALLBACK[box.category]
        record.boxes[index] = box.model_copy(update={"coco_class": name})
    return Counter(b.coco_class for r in records for b in r.boxes if b.coco_class)
