"""Detection metrics on normalised xyxy boxes, independent of the model's runtime.

Matching is greedy by confidence within a class at IoU >= 0.5 (as COCO and Ultralytics do); AP is
the 101-point interpolated area under the precision-recall curve, mAP50-95 the mean over IoU
0.50:0.05:0.95.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


@dataclass(frozen=True)
class Box:
    category: str
    xyxy: tuple[float, float, float, float]
    conf: float = 1.0


@dataclass
class ImageResult:
    file: str
    truth: list[Box]
    predicted: list[Box]


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


def match(truth: list[Box], predicted: list[Box], iou_threshold: float) -> list[tuple[int, int, float]]:
    """(pred index, truth index, IoU) for each true positive; same class, best conf first."""
    order = sorted(range(len(predicted)), key=lambda i: -predicted[i].conf)
    ious = iou_matrix(predicted, truth)
    used: set[int] = set()
    pairs = []
    for p in order:
        best, best_iou = -1, iou_threshold
        for t in range(len(truth)):
            if t in used or truth[t].category != predicted[p].category:
                continue
            if ious[p, t] >= best_iou:
                best, best_iou = t, float(ious[p, t])
        if best >= 0:
            used.add(best)
            pairs.append((p, best, best_iou))
    return pairs


RECALL_GRID = np.linspace(0, 1, 101)


def precision_at_recall(tp: np.ndarray, conf: np.ndarray, n_truth: int) -> np.ndarray:
    """The interpolated precision-recall curve: best precision at recall >= each RECALL_GRID point."""
    if n_truth == 0 or tp.size == 0:
        return np.zeros_like(RECALL_GRID)
    order = np.argsort(-conf, kind="stable")
    tps = np.cumsum(tp[order])
    fps = np.cumsum(1 - tp[order])
    recall = tps / n_truth
    precision = tps / np.maximum(tps + fps, 1e-12)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_GRID, side="left")
    return np.asarray([envelope[i] if i < len(envelope) else 0.0 for i in idx])


def average_precision(tp: np.ndarray, conf: np.ndarray, n_truth: int) -> float:
    if n_truth == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    return float(np.mean(precision_at_recall(tp, conf, n_truth)))


@dataclass
class Report:
    classes: list[str]
    conf_threshold: float
    precision: float
    recall: float
    f1: float
    mean_iou: float
    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # rows truth, cols predicted (+ background)
    image_accuracy: float = 0.0
    threshold_curve: list[dict[str, float]] = field(default_factory=list)
    threshold_for_precision: dict[str, float | None] = field(default_factory=dict)
    images: int = 0
    # per class present in the truth: precision at recall 0, 0.01, ..., 1 (IoU 0.5), for charts
    pr_curves: dict[str, list[float]] = field(default_factory=dict)


def _per_class_ranking(
    results: list[ImageResult], category: str, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """(true positive flags, confidences, number of true boxes) of one class's predictions."""
    tp: list[float] = []
    conf: list[float] = []
    n_truth = 0
    for result in results:
        truth = [b for b in result.truth if b.category == category]
        pred = [b for b in result.predicted if b.category == category]
        n_truth += len(truth)
        matched = {p for p, _, _ in match(truth, pred, iou_threshold)}
        tp.extend(1.0 if i in matched else 0.0 for i in range(len(pred)))
        conf.extend(b.conf for b in pred)
    return np.asarray(tp), np.asarray(conf), n_truth


def _per_class_ap(results: list[ImageResult], category: str, iou_threshold: float) -> float:
    return average_precision(*_per_class_ranking(results, category, iou_threshold))


def evaluate_results(
    results: list[ImageResult],
    classes: list[str],
    conf_threshold: float = 0.25,
    target_precision: float = 0.95,
    positive: str = "animal",
) -> Report:
    above = [
        ImageResult(r.file, r.truth, [b for b in r.predicted if b.conf >= conf_threshold]) for r in results
    ]
    tp = fp = fn = 0
    ious: list[float] = []
    per_class_counts = {c: [0, 0, 0] for c in classes}  # tp, fp, fn
    index = {c: i for i, c in enumerate(classes)}
    background = len(classes)
    confusion = np.zeros((len(classes) + 1, len(classes) + 1), dtype=int)
    for result in above:
        pairs = match(result.truth, result.predicted, 0.5)
        matched_pred = {p for p, _, _ in pairs}
        matched_truth = {t for _, t, _ in pairs}
        tp += len(pairs)
        fp += len(result.predicted) - len(pairs)
        fn += len(result.truth) - len(pairs)
        ious.extend(i for _, _, i in pairs)
        for p, t, _ in pairs:
            per_class_counts[result.truth[t].category][0] += 1
            confusion[index[result.truth[t].category], index[result.predicted[p].category]] += 1
        # unmatched boxes: a class confusion if they overlap a leftover truth box, else background
        leftovers = [t for t in range(len(result.truth)) if t not in matched_truth]
        overlaps = iou_matrix([result.predicted[p] for p in range(len(result.predicted))], result.truth)
        for p in range(len(result.predicted)):
            if p in matched_pred:
                continue
            per_class_counts.setdefault(result.predicted[p].category, [0, 0, 0])[1] += 1
            hits = [t for t in leftovers if overlaps[p, t] >= 0.5]
            if hits:
                leftovers.remove(hits[0])
                confusion[
                    index[result.truth[hits[0]].category], index.get(result.predicted[p].category, background)
                ] += 1
            else:
                confusion[background, index.get(result.predicted[p].category, background)] += 1
        for t in range(len(result.truth)):
            if t not in matched_truth:
                per_class_counts[result.truth[t].category][2] += 1
                if t in leftovers:
                    confusion[index[result.truth[t].category], background] += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    present = [c for c in classes if any(b.category == c for r in results for b in r.truth)]
    ap50 = {c: _per_class_ap(results, c, 0.5) for c in present}
    ap_all = {c: float(np.mean([_per_class_ap(results, c, t) for t in IOU_THRESHOLDS])) for c in present}
    per_class = {}
    for c in classes:
        ctp, cfp, cfn = per_class_counts[c]
        cp = ctp / (ctp + cfp) if ctp + cfp else 0.0
        cr = ctp / (ctp + cfn) if ctp + cfn else 0.0
        per_class[c] = {
            "precision": cp,
            "recall": cr,
            "f1": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
            "ap50": ap50.get(c, float("nan")),
            "instances": float(ctp + cfn),
        }
    report = Report(
        classes=classes,
        conf_threshold=conf_threshold,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=float(np.mean(ious)) if ious else 0.0,
        map50=float(np.mean(list(ap50.values()))) if ap50 else 0.0,
        map50_95=float(np.mean(list(ap_all.values()))) if ap_all else 0.0,
        per_class=per_class,
        confusion=confusion.tolist(),
        images=len(results),
        pr_curves={
            c: [round(float(v), 4) for v in precision_at_recall(*_per_class_ranking(results, c, 0.5))]
            for c in present
        },
    )
    _image_level(report, results, conf_threshold, target_precision, positive)
    return report


def _image_level(
    report: Report, results: list[ImageResult], conf_threshold: float, target: float, positive: str
) -> None:
    """Empty-vs-animal per image, and the Snapshot Serengeti style automation curve: for each
    confidence level, the share of images decided automatically and the accuracy on those."""
    score = np.asarray(
        [max((b.conf for b in r.predicted if b.category == positive), default=0.0) for r in results]
    )
    truth = np.asarray([any(b.category == positive for b in r.truth) for r in results])
    if not len(results):
        return
    report.image_accuracy = float(np.mean((score >= conf_threshold) == truth))
    decided_animal = score >= 0.5
    certainty = np.where(decided_animal, score, 1 - score)
    correct = decided_animal == truth
    for level in np.round(np.arange(0.5, 1.0, 0.025), 3):
        handled = certainty >= level
        report.threshold_curve.append(
            {
                "confidence": float(level),
                "handled": float(handled.mean()),
                "accuracy": float(correct[handled].mean()) if handled.any() else float("nan"),
            }
        )
    # the lowest animal threshold at which "animal" calls are at least `target` precise
    chosen = None
    for threshold in np.round(np.arange(0.05, 1.0, 0.01), 2):
        called = score >= threshold
        if called.any() and float(truth[called].mean()) >= target:
            chosen = float(threshold)
            break
    report.threshold_for_precision = {
        "target_precision": target,
        "threshold": chosen,
        "recall_at_threshold": float(truth[score >= chosen].sum() / max(truth.sum(), 1)) if chosen else None,
    }
