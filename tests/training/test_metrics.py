from __future__ import annotations

import numpy as np
import pytest

from trapline.training.metrics import (
    Box,
    ImageResult,
    box_summary,
    choose_thresholds,
    coco_matches,
    coverage_curve,
    image_summary,
)

CLASSES = ["animal", "person", "vehicle"]
ALL = dict.fromkeys(CLASSES, 0.25)


def _box(cat: str, x: float, conf: float = 1.0, size: float = 0.2) -> Box:
    return Box(cat, (x, 0.1, x + size, 0.1 + size), conf)


def _image(
    key: str,
    truth: list[Box] | None,
    predicted: list[Box],
    present: list[str] | None = None,
    site: str = "s1",
) -> ImageResult:
    return ImageResult(key, site, 1000, 800, truth, True, present, predicted)


def test_perfect_predictions_score_one_and_absent_classes_get_no_ap() -> None:
    results = [_image("a", [_box("animal", 0.1)], [_box("animal", 0.1, 0.9)])]
    summary = box_summary(coco_matches(results, CLASSES), ALL)
    assert summary["classes_present"] == ["animal"]  # no person or vehicle in truth: no AP for them
    assert summary["map50"] == pytest.approx(1.0)
    assert summary["box_recall50"] == 1.0


def test_ap_of_a_known_ranking_follows_coco_101_point_interpolation() -> None:
    # ranking TP 0.9, FP 0.8, TP 0.7 with 2 truths: precision 1.0 up to recall 0.5, then 2/3
    results = [
        _image("a", [_box("animal", 0.1)], [_box("animal", 0.1, 0.9)]),
        _image("b", [_box("animal", 0.5)], [_box("animal", 0.1, 0.8), _box("animal", 0.5, 0.7)]),
    ]
    matches = coco_matches(results, CLASSES)
    assert matches.ap50["animal"] == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101)
    assert matches.instances == {"animal": 2, "person": 0, "vehicle": 0}
    # at 0.75 only the first two predictions count: one hit of two truths
    at = box_summary(matches, {"animal": 0.75, "person": 1.0, "vehicle": 1.0})["per_class"]["animal"]
    assert (at["recall50"], at["precision50"]) == (0.5, 0.5)


def test_a_box_of_the_wrong_class_is_no_hit_and_ambiguous_photos_are_left_out() -> None:
    results = [
        _image("a", [_box("animal", 0.1)], [_box("person", 0.1, 0.9)]),
        _image("b", None, [_box("animal", 0.5, 0.9)]),  # unsure truth: not scored for boxes
    ]
    summary = box_summary(coco_matches(results, CLASSES), ALL)
    assert summary["map50"] == 0.0 and summary["boxes"] == 1


def test_image_level_accuracy_false_alarms_on_empties_and_recall() -> None:
    results = [
        _image("a", [], [_box("animal", 0.1, 0.9)], ["animal"]),  # found
        _image("b", [], [_box("animal", 0.1, 0.2)], ["animal"]),  # missed (under threshold)
        _image("c", [], [_box("person", 0.1, 0.6)], []),  # empty, but a person box: a false alarm
        _image("d", [], [_box("animal", 0.1, 0.1)], []),  # empty, quiet
        _image("e", [], [], ["vehicle"]),  # no animal, none called
        _image("f", [], [_box("animal", 0.1, 0.9)], None),  # no image-level label: not counted
    ]
    summary = image_summary(results, ALL)
    assert summary["images"] == 5
    assert summary["accuracy"] == pytest.approx(4 / 5)
    assert summary["animal_recall"] == 0.5
    assert (summary["empty_images"], summary["empty_fp_rate"]) == (2, 0.5)


def test_coverage_curve_trades_share_decided_for_accuracy() -> None:
    results = [
        _image("a", [], [_box("animal", 0.1, 0.95)], ["animal"]),
        _image("b", [], [_box("animal", 0.1, 0.6)], []),  # a wrong, unsure call
        _image("c", [], [], []),
    ]
    curve = {round(p["confidence"], 3): p for p in coverage_curve(results)}
    assert curve[0.5]["coverage"] == 1.0 and curve[0.5]["accuracy"] == pytest.approx(2 / 3)
    assert curve[0.7]["coverage"] == pytest.approx(2 / 3) and curve[0.7]["accuracy"] == 1.0


def test_thresholds_are_the_lowest_that_keep_the_target_precision_never_below_the_default() -> None:
    truths = [_box("animal", 0.08 * i, size=0.04) for i in range(12)]
    predicted = [
        Box("animal", t.xyxy, conf) for t, conf in zip(truths, np.linspace(0.9, 0.55, 12), strict=True)
    ]
    predicted += [_box("animal", 0.96, 0.5, 0.03), _box("animal", 0.96, 0.3, 0.04)]  # two false boxes
    people = [_box("person", 0.08 * i, size=0.04) for i in range(12)]
    predicted += [Box("person", t.xyxy, 0.1) for t in people]  # right, but only at 0.1
    matches = coco_matches([_image("a", truths + people, predicted)], CLASSES)
    chosen, how = choose_thresholds(matches, CLASSES, target_precision=0.9, default=0.25)
    assert chosen["animal"] == pytest.approx(0.31)  # 12 of 13 boxes right above the 0.3 false one
    assert chosen["person"] == 0.25  # precise from 0.05 up here, but never below the default
    assert chosen["vehicle"] == 0.25 and "default" in how["vehicle"]
    few, how_few = choose_thresholds(matches, CLASSES, 0.9, 0.25, min_instances=20)
    assert few["animal"] == 0.25 and "12 validation instances" in how_few["animal"]


def test_truth_of_classes_the_model_lacks_is_not_scored() -> None:
    results = [_image("a", [_box("animal", 0.1), _box("vehicle", 0.5)], [_box("animal", 0.1, 0.9)])]
    summary = box_summary(coco_matches(results, ["animal"]), {"animal": 0.25})
    assert summary["classes_present"] == ["animal"] and summary["box_recall50"] == 1.0
