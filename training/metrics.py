"""Detection and camera-trap metrics, independent of the model's runtime.

Box metrics come from pycocotools, the COCO reference implementation that published detection
numbers are computed with (faster-coco-eval re-implements it; with a few hundred photos speed does
not matter, agreement with the reference does): AP at IoU 0.5 and 0.50:0.95 per class (101-point
interpolation, up to 100 boxes per photo), reported only for classes with instances in the split,
and box recall at IoU 0.5 at the operating thresholds from the same matching.

Image-level metrics answer what a camera-trap user asks: is there an animal in this photo (accuracy
against labels made by people or file names, never by a teacher), how often an empty photo gets any
box at all (each one costs a look), how many photos with an animal are found; and the
coverage-vs-accuracy curve: the share of photos decided automatically at each confidence level and
the accuracy on those.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

POSITIVE = "animal"
COVERAGE_LEVELS = np.round(np.arange(0.5, 1.0, 0.025), 3)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


@dataclass(frozen=True)
class Box:
    category: str
    xyxy: tuple[float, float, float, float]  # normalised 0-1
    conf: float = 1.0


@dataclass
class ImageResult:
    """One photo: its labels and what a model predicted (at a low confidence floor)."""

    key: str
    site: str
    width: int
    height: int
    truth: list[Box] | None  # None: boxes incomplete (ambiguous photo)
    independent: bool  # truth boxes (or their absence) not made by a teacher
    present: list[str] | None  # image-level label by people or file names; [] = empty
    predicted: list[Box] = field(default_factory=list)


@dataclass
class Matches:
    """Per class, every prediction's confidence and whether it matched a truth box at IoU 0.5."""

    scores: dict[str, np.ndarray]
    matched: dict[str, np.ndarray]
    instances: dict[str, int]
    ap50: dict[str, float]
    ap50_95: dict[str, float]
    # per class present: COCOeval's interpolated precision at recall 0, 0.01, ..., 1 (IoU 0.5), the
    # curve AP50 averages; what the dashboard charts
    pr50: dict[str, list[float]] = field(default_factory=dict)


def _quiet_coco() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress


def coco_matches(results: list[ImageResult], classes: list[str]) -> Matches:
    """Run COCOeval over photos with complete truth; classes without instances get no AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    scored = [r for r in results if r.truth is not None]
    ids = {c: i + 1 for i, c in enumerate(classes)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, result in enumerate(scored, 1):
        images.append({"id": image_id, "width": result.width, "height": result.height})
        scale = np.asarray([result.width, result.height] * 2)
        for box in result.truth or []:
            if box.category not in ids:
                continue  # a class this model does not have (MegadetectorLite: animals only)
            x1, y1, x2, y2 = np.asarray(box.xyxy) * scale
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[box.category],
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            )  # fmt: skip
        for box in result.predicted:
            if box.category in ids:
                x1, y1, x2, y2 = np.asarray(box.xyxy) * scale
                detections.append(
                    {"image_id": image_id, "category_id": ids[box.category],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": box.conf}
                )  # fmt: skip
    instances = {c: sum(a["category_id"] == ids[c] for a in annotations) for c in classes}
    present = [c for c in classes if instances[c]]
    empty = {c: np.zeros(0) for c in classes}
    if not present or not images:
        return Matches(empty, empty, instances, {}, {})
    with _quiet_coco():
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": i, "name": c} for c, i in ids.items()]}  # fmt: skip
        truth.createIndex()
        predicted = truth.loadRes(detections) if detections else None
    if predicted is None:
        zeros = dict.fromkeys(present, 0.0)
        return Matches(empty, empty, instances, zeros, dict(zeros))
    evaluator = COCOeval(truth, predicted, "bbox")
    evaluator.params.catIds = [ids[c] for c in present]
    evaluator.params.imgIds = [i["id"] for i in images]
    with _quiet_coco():
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, maxdets]
    ap50, ap50_95, pr50 = {}, {}, {}
    for k, name in enumerate(present):
        curve = precision[:, :, k, 0, -1]
        ap50[name] = float(np.mean(np.clip(curve[0], 0, None)))
        ap50_95[name] = float(np.mean(np.clip(curve, 0, None)))
        pr50[name] = [round(float(v), 4) for v in np.clip(curve[0], 0, None)]
    scores: dict[str, list[float]] = defaultdict(list)
    matched: dict[str, list[bool]] = defaultdict(list)
    names = {ids[c]: c for c in present}
    for entry in evaluator.evalImgs:
        # one entry per (class, area range, photo); area range 0 is "all", IoU index 0 is 0.5
        if entry is None or entry["aRng"] != evaluator.params.areaRng[0]:
            continue
        name = names[entry["category_id"]]
        keep = ~np.asarray(entry["dtIgnore"][0], bool)
        scores[name].extend(np.asarray(entry["dtScores"])[keep].tolist())
        matched[name].extend((np.asarray(entry["dtMatches"][0]) > 0)[keep].tolist())
    return Matches(
        {c: np.asarray(scores.get(c, [])) for c in classes},
        {c: np.asarray(matched.get(c, []), bool) for c in classes},
        instances,
        ap50,
        ap50_95,
        pr50,
    )


def box_summary(matches: Matches, thresholds: dict[str, float]) -> dict[str, Any]:
    """Per class AP and recall/precision at the class's threshold; means over classes present."""
    per_class: dict[str, dict[str, float]] = {}
    for name, instances in matches.instances.items():
        if not instances:
            continue
        called = matches.scores[name] >= thresholds[name]
        found = int(matches.matched[name][called].sum())
        recall = found / instances
        precision = found / int(called.sum()) if called.any() else 0.0
        per_class[name] = {
            "instances": instances,
            "ap50": matches.ap50.get(name, 0.0),
            "ap50_95": matches.ap50_95.get(name, 0.0),
            "recall50": recall,
            "precision50": precision,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "threshold": thresholds[name],
        }
    total = sum(v["instances"] for v in per_class.values())
    hits = sum(v["recall50"] * v["instances"] for v in per_class.values())
    return {
        "classes_present": list(per_class),
        "map50": float(np.mean([v["ap50"] for v in per_class.values()])) if per_class else None,
        "map50_95": float(np.mean([v["ap50_95"] for v in per_class.values()])) if per_class else None,
        "box_recall50": hits / total if total else None,
        "boxes": total,
        "per_class": per_class,
        "pr_curves": {c: matches.pr50[c] for c in per_class if c in matches.pr50},
    }


def iou_matrix(a: list[Box], b: list[Box]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    xa = np.asarray([x.xyxy for x in a])
    xb = np.asarray([x.xyxy for x in b])
    lt = np.maximum(xa[:, None, :2], xb[None, :, :2])
    rb = np.minimum(xa[:, None, 2:], xb[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (xa[:, 2:] - xa[:, :2]).prod(axis=1)
    area_b = (xb[:, 2:] - xb[:, :2]).prod(axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12))


def confusion_matrix(
    results: Iterable[ImageResult], classes: list[str], thresholds: dict[str, float]
) -> list[list[int]]:
    """Rows: true class (then background), columns: predicted class (then background), over
    photos with complete truth and boxes at their class's threshold. A prediction is paired with
    the free truth box it overlaps most (IoU >= 0.5, any class; best confidence first): a pair of
    different classes is a confusion, an unpaired prediction a false box, an unpaired truth a miss.
    Truth of classes the model does not have is left out, as in `coco_matches`."""
    index = {c: i for i, c in enumerate(classes)}
    background = len(classes)
    matrix = np.zeros((len(classes) + 1, len(classes) + 1), dtype=int)
    for result in results:
        if result.truth is None:
            continue
        truth = [b for b in result.truth if b.category in index]
        kept = (
            b for b in result.predicted if b.category in index and b.conf >= thresholds.get(b.category, 1.1)
        )
        predicted = sorted(kept, key=lambda b: -b.conf)
        ious = iou_matrix(predicted, truth)
        free = set(range(len(truth)))
        for p, box in enumerate(predicted):
            best = max(free, key=lambda t: ious[p, t], default=None)
            if best is not None and ious[p, best] >= 0.5:
                free.discard(best)
                matrix[index[truth[best].category], index[box.category]] += 1
            else:
                matrix[background, index[box.category]] += 1
        for t in free:
            matrix[index[truth[t].category], background] += 1
    return [[int(v) for v in row] for row in matrix]


def _animal_score(result: ImageResult) -> float:
    return max((b.conf for b in result.predicted if b.category == POSITIVE), default=0.0)


def _any_box(result: ImageResult, thresholds: dict[str, float]) -> bool:
    return any(b.conf >= thresholds.get(b.category, 1.1) for b in result.predicted)


def image_summary(results: Iterable[ImageResult], thresholds: dict[str, float]) -> dict[str, Any]:
    """Animal vs no animal on photos with an image-level label (people or file names)."""
    labelled = [r for r in results if r.present is not None]
    if not labelled:
        return {"images": 0}
    truth = np.asarray([POSITIVE in (r.present or []) for r in labelled])
    called = np.asarray([_animal_score(r) >= thresholds[POSITIVE] for r in labelled])
    empty = [r for r in labelled if r.present == []]
    false_alarms = sum(_any_box(r, thresholds) for r in empty)
    return {
        "images": len(labelled),
        "accuracy": float(np.mean(called == truth)),
        "animal_images": int(truth.sum()),
        "animal_recall": float(called[truth].mean()) if truth.any() else None,
        "empty_images": len(empty),
        "empty_fp_rate": false_alarms / len(empty) if empty else None,
        "no_animal_images": int((~truth).sum()),
        "no_animal_fp_rate": float(called[~truth].mean()) if (~truth).any() else None,
    }


def coverage_curve(results: Iterable[ImageResult]) -> list[dict[str, float]]:
    """For each confidence level: the share of labelled photos decided automatically (animal when
    the best animal score reaches it, empty when the score stays below 1 - level) and the accuracy
    of those decisions (Snapshot Serengeti's automation curve)."""
    labelled = [r for r in results if r.present is not None]
    if not labelled:
        return []
    score = np.asarray([_animal_score(r) for r in labelled])
    truth = np.asarray([POSITIVE in (r.present or []) for r in labelled])
    animal = score >= 0.5
    certainty = np.where(animal, score, 1 - score)
    correct = animal == truth
    curve = []
    for level in COVERAGE_LEVELS:
        decided = certainty >= level
        curve.append(
            {"confidence": float(level), "coverage": float(decided.mean()),
             "accuracy": float(correct[decided].mean()) if decided.any() else float("nan")}
        )  # fmt: skip
    return curve


def choose_thresholds(
    matches: Matches,
    classes: list[str],
    target_precision: float,
    default: float,
    min_instances: int = 10,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per class: the lowest threshold, not below `default`, whose box precision (IoU 0.5) on this
    data reaches the target at that threshold and every higher one; `default` for classes with
    fewer than `min_instances` boxes or no threshold reaching it. Thresholds never go below the
    default: a small validation split holds too few empty photos to show the false boxes a lower
    one lets through. Returns the thresholds and, per class, how each was chosen."""
    chosen, how = {}, {}
    for name in classes:
        instances = matches.instances.get(name, 0)
        scores, matched = matches.scores.get(name, np.zeros(0)), matches.matched.get(name, np.zeros(0, bool))
        if instances < min_instances:
            chosen[name], how[name] = default, f"default ({instances} validation instances < {min_instances})"
            continue
        ok = []
        grid = THRESHOLD_GRID[default <= THRESHOLD_GRID]
        for threshold in grid:
            called = scores >= threshold
            precision = float(matched[called].mean()) if called.any() else 1.0
            ok.append(precision >= target_precision)
        # the lowest threshold from which precision stays at or above the target
        start = next((i for i in range(len(ok)) if all(ok[i:])), None)
        if start is None:
            chosen[name], how[name] = default, f"default (precision {target_precision} not reached)"
        else:
            chosen[name] = float(grid[start])
            recall = float(matched[scores >= chosen[name]].sum()) / instances
            how[name] = (
                f"precision >= {target_precision} on {instances} validation boxes (recall {recall:.2f})"
            )
    return chosen, how
