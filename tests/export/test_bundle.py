"""`trapline export bundle`: a real model becomes a signed bundle whose manifest carries what the
trap and the dashboard need (classes, input, metrics with curves, provenance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trapline.bundle import unpack_bundle, verify_bundle
from trapline.edge.config import PACKAGED_MODELS
from trapline.export.bundle import build_bundle, bundle_metrics, finite_json, training_provenance
from trapline.keyring import generate_keys
from trapline.manifest import Thresholds
from trapline.training.evaluate import ModelReport, score, write_report
from trapline.training.metrics import Box, ImageResult, confusion_matrix, coverage_curve

COCO_ONNX = PACKAGED_MODELS / "yolov8n-coco-int8-dynamic.onnx"  # carries Ultralytics' metadata


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keys(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub")
    return tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"


CLASSES = ["animal", "person", "vehicle"]
HOW = "precision >= 0.9 on 12 validation boxes (recall 0.80)"


def _report(role: str, animal_conf: float, false_conf: float) -> ModelReport:
    """A model's report as `train evaluate` makes it, on two photos: one animal, one verified empty
    on which the model puts a weak animal box."""
    animal = (0.1, 0.1, 0.3, 0.3)
    results = [
        ImageResult("a", "s1", 1000, 800, [Box("animal", animal)], True, ["animal"],
                    [Box("animal", animal, animal_conf)]),
        ImageResult("b", "s1", 1000, 800, [], True, [], [Box("animal", (0.5, 0.5, 0.6, 0.6), false_conf)]),
    ]  # fmt: skip
    thresholds = dict.fromkeys(CLASSES, 0.25)
    image, boxes, independent, per_site = score(results, CLASSES, thresholds)
    return ModelReport(
        "model.tflite", role, "test", thresholds, dict.fromkeys(CLASSES, HOW), image, boxes, independent,
        per_site, coverage_curve(results), CLASSES, confusion_matrix(results, CLASSES, thresholds),
    )  # fmt: skip


def _evaluation(tmp_path: Path) -> Path:
    """`train evaluate`'s report.json: shipped, then the base model, with NaN as evaluate writes it
    (the base decides no photo at high confidence: accuracy on none is NaN)."""
    write_report([_report("shipped", 0.9, 0.1), _report("base", 0.6, 0.45)], tmp_path, "test split")
    path = tmp_path / "report.json"
    assert "NaN" in path.read_text()  # not valid JSON for a browser
    return path


def test_metrics_keep_numbers_and_curves_and_drop_nan(tmp_path: Path) -> None:
    checks = [{"target": "onnx-int8", "val_map50": 0.65, "pytorch_val_map50": 0.64, "passed": True}]
    (tmp_path / "export_report.json").write_text(json.dumps(checks))
    metrics = bundle_metrics(_evaluation(tmp_path), tmp_path / "export_report.json")
    test, base = metrics["test_split"], metrics["test_split_baseline"]
    assert test["map50"] == pytest.approx(1.0) and test["classes_present"] == ["animal"]
    assert (test["image_accuracy"], test["empty_false_positive_rate"]) == (1.0, 0.0)
    assert (base["image_accuracy"], base["empty_false_positive_rate"]) == (0.5, 1.0)
    assert test["classes"] == CLASSES
    # rows true, columns predicted, background last: the animal found; the base's false box
    assert test["confusion"][0][0] == 1 and sum(map(sum, test["confusion"])) == 1
    assert base["confusion"][3][0] == 1
    assert test["threshold_curve"][0] == {"confidence": 0.5, "handled": 1.0, "accuracy": 1.0}
    assert base["threshold_curve"][-1]["accuracy"] is None  # NaN in the report, null in JSON
    assert len(test["pr_curves"]["animal"]) == 101 and test["pr_curves"]["animal"][0] == 1.0
    assert test["per_class"]["animal"]["ap50"] == pytest.approx(1.0) and "person" not in test["per_class"]
    assert test["threshold_for_precision"] == {"target_precision": 0.9, "threshold": 0.25}
    assert [r["role"] for r in metrics["evaluation"]] == ["shipped", "base"]
    assert metrics["export_checks_val_split"] == checks
    json.dumps(metrics, allow_nan=False)  # a browser can parse it


def test_finite_json_walks_nested_values() -> None:
    assert finite_json({"a": [1.0, math.nan, {"b": math.inf}], "c": (2,)}) == {
        "a": [1.0, None, {"b": None}],
        "c": [2],
    }


def test_training_provenance_reads_the_run_and_the_split(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "data.yaml").write_text("path: .\n")
    (dataset / "splits.json").write_text(json.dumps({"a.jpg": "train", "b.jpg": "train", "c.jpg": "test"}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.yaml").write_text(
        f"model: yolov8n.pt\nepochs: 30\nimgsz: 416\ndata: {dataset / 'data.yaml'}\nlr0: 0.01\n"
    )
    provenance = training_provenance(run)
    assert provenance["training"]["epochs"] == 30 and provenance["training"]["imgsz"] == 416
    assert "lr0" not in provenance["training"]  # only the arguments that define the run
    assert provenance["dataset"] == {"images_per_split": {"test": 1, "train": 2}}


def test_build_sign_pack_and_verify_a_real_model(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    report = tmp_path / "report.md"
    report.write_text("# evaluation\n")
    manifest = build_bundle(
        COCO_ONNX,
        tmp_path / "bundle",
        "coco-test",
        "3",
        keys[0],
        metrics={"test_split": {"map50": math.nan, "precision": 0.5}},
        provenance={"training": {"epochs": 1}},
        thresholds=Thresholds(conf=0.3),
        extra_files=[report],
        archive=True,
    )
    assert (manifest.name, manifest.version, manifest.format) == ("coco-test", "3", "onnx")
    assert (manifest.input.height, manifest.input.width) == (640, 640)
    assert len(manifest.class_names) == 80 and manifest.categories is not None
    assert manifest.categories[manifest.class_names.index("person")] == "person"
    assert manifest.categories[manifest.class_names.index("dog")] == "animal"
    assert manifest.categories[manifest.class_names.index("chair")] is None  # not published
    assert manifest.thresholds.conf == 0.3
    assert manifest.metrics["test_split"] == {"map50": None, "precision": 0.5}
    assert (
        manifest.provenance["training"] == {"epochs": 1}
        and manifest.provenance["source_model"] == COCO_ONNX.name
    )
    # the self-test's reference pictures are signed like the model
    references = {f"reference-{n}.jpg" for n in range(3)}
    assert set(manifest.files) == {"model.onnx", "report.md"} | references
    assert manifest.self_test is not None and {f.file for f in manifest.self_test.frames} == references
    assert verify_bundle(tmp_path / "bundle", keys[1]).files == manifest.files
    unpacked = unpack_bundle((tmp_path / "bundle.tar.gz").read_bytes(), tmp_path / "unpacked")
    assert verify_bundle(unpacked, keys[1]).version == "3"


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not protobuf")
    with pytest.raises(Exception, match="not a loadable ONNX model"):
        build_bundle(fake, tmp_path / "bundle", "x", "1", keys[0])
    assert not (tmp_path / "bundle" / "manifest.sig").exists()
