from __future__ import annotations

import numpy as np
import pytest

from trapline.training.metrics import Box, ImageResult, average_precision, evaluate_results, match

CLASSES = ["animal", "person", "vehicle"]


def _box(cat: str, x: float, conf: float = 1.0, size: float = 0.2) -> Box:
    return Box(cat, (x, 0.1, x + size, 0.1 + size), conf)


def test_match_is_per_class_and_best_confidence_first() -> None:
    truth = [_box("animal", 0.1), _box("person", 0.5)]
    predicted = [_box("animal", 0.11, 0.6), _box("animal", 0.1, 0.9), _box("animal", 0.5, 0.8)]
    pairs = match(truth, predicted, 0.5)
    assert [(p, t) for p, t, _ in pairs] == [(1, 0)]  # the person box cannot be matched by "animal"
    assert pairs[0][2] == pytest.approx(1.0)


def test_average_precision_of_a_known_ranking() -> None:
    # ranking: TP, FP, TP with 2 truths: precision envelope 1.0 up to recall 0.5, then 2/3
    ap = average_precision(np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.8, 0.7]), 2)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert ap == pytest.approx(expected)


def test_report_counts_precision_recall_confusion_and_images() -> None:
    results = [
        ImageResult("a", [_box("animal", 0.1)], [_box("animal", 0.1, 0.9)]),  # TP
        ImageResult("b", [_box("animal", 0.1)], [_box("person", 0.1, 0.8)]),  # wrong class
        ImageResult("c", [], [_box("animal", 0.5, 0.7)]),  # FP on an empty frame
        ImageResult("d", [_box("person", 0.3)], []),  # missed
        ImageResult("e", [], [_box("animal", 0.5, 0.1)]),  # below the operating threshold
    ]
    report = evaluate_results(results, CLASSES, conf_threshold=0.25, target_precision=0.95)
    assert report.precision == pytest.approx(1 / 3)
    assert report.recall == pytest.approx(1 / 3)
    assert report.mean_iou == pytest.approx(1.0)
    assert report.confusion == [
        [1, 1, 0, 0],  # animal: one right, one called person
        [0, 0, 0, 1],  # person: missed
        [0, 0, 0, 0],
        [1, 0, 0, 0],  # background called animal
    ]
    # images: a animal/animal, b animal/none, c none/animal, d none/none, e none/none -> 3 of 5
    assert report.image_accuracy == pytest.approx(3 / 5)
    assert report.threshold_for_precision["threshold"] == pytest.approx(0.71)  # above c's 0.7
    assert report.per_class["animal"]["ap50"] == pytest.approx(
        average_precision(np.array([1.0, 0.0, 0.0]), np.array([0.9, 0.7, 0.1]), 2)
    )
    # the charted precision-recall curve is the one AP integrates, for the classes in the truth only
    assert set(report.pr_curves) == {"animal", "person"}
    assert len(report.pr_curves["animal"]) == 101
    assert np.mean(report.pr_curves["animal"]) == pytest.approx(report.per_class["animal"]["ap50"], abs=1e-3)
    assert report.pr_curves["animal"][:51] == [1.0] * 51  # a's box, the best, is right
    assert report.pr_curves["person"] == [0.0] * 101  # the person was never found
