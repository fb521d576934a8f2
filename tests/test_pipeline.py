"""Prepare -> fit -> evaluate -> export ONNX INT8 -> bundle -> the agent runs it, on real photos."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, SHARED_WEIGHTS, needs_shared
from trapline.bundle import verify_bundle
from trapline.edge.agent import Agent
from trapline.edge.config import AgentConfig
from trapline.export.bundle import build_bundle
from trapline.export.exporter import ExportCheckError, export_all
from trapline.keyring import generate_keys

pytestmark = pytest.mark.slow


def test_train_export_bundle_and_run_on_the_trap(tmp_path: Path, camtrap: Path) -> None:
    from trapline.training.evaluate import evaluate, write_report
    from trapline.training.fit import fit
    from trapline.training.prepare import prepare

    # a small real subset: the human-labelled squirrels and the jaguars (MegaDetector labels)
    images = tmp_path / "images"
    for subset in ("pw-example", "jaguar"):
        shutil.copytree(camtrap / "images" / subset, images / subset)
    prepared = prepare(
        images, tmp_path / "dataset", megadetector=camtrap / "megadetector.json", md_threshold=0.8,
        yolo_labels=camtrap / "labels" / "pw-example", yolo_classes=["animal"],
    )  # fmt: skip
    assert len(prepared.records) >= 25
    assert set(prepared.splits.values()) == {"train", "val", "test"}

    weights = fit(
        prepared.data_yaml, needs_shared(SHARED_WEIGHTS / "yolov8n-coco.pt"), tmp_path / "run",
        epochs=1, imgsz=160, batch=8, patience=0, freeze=10,
    )  # fmt: skip
    assert weights.name == "last.pt"
    report = evaluate(weights, prepared.data_yaml, "test", imgsz=160)  # thresholds chosen on val
    assert report.boxes["classes_present"] == ["animal"]  # no AP for classes the split does not hold
    markdown = write_report([report], tmp_path / "report", "pipeline test")
    assert "mAP50" in markdown.read_text()
    assert (tmp_path / "report" / "coverage.png").exists()

    with pytest.raises(ExportCheckError, match="lost too much accuracy"):  # an impossible bar
        export_all(weights, prepared.data_yaml, tmp_path / "strict", ["onnx-int8"], 160, max_map50_drop=-101)
    [result] = export_all(
        weights, prepared.data_yaml, tmp_path / "export", ["onnx-int8"], 160, max_map50_drop=100
    )
    int8 = Path(result.path)
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ, not dynamic ConvInteger

    generate_keys(tmp_path / "keys" / "k.key", tmp_path / "keys" / "k.pub")
    bundle = tmp_path / "bundle"
    build_bundle(int8, bundle, "trapline-test", "1", tmp_path / "keys" / "k.key",
                 metrics={"test_map50": report.boxes["map50"]}, extra_files=[markdown])  # fmt: skip
    manifest = verify_bundle(bundle, tmp_path / "keys" / "k.pub")
    assert manifest.class_names == ["animal", "person", "vehicle"]
    assert (manifest.input.height, manifest.input.width) == (160, 160)

    config = AgentConfig.model_validate({
        "device_id": "trap-test",
        "source": {"type": "replay", "files": [str(SAMPLES)], "count": 3},
        "model": {"path": str(bundle), "keyring": str(tmp_path / "keys" / "k.pub"), "fallback_to_packaged": False},
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "q"),
    })  # fmt: skip
    agent = Agent(config)
    assert agent.detector.info.name == "trapline-test"
    for frame in agent.source.frames(threading.Event(), agent.spool.is_processed):
        if frame is not None:
            agent.process(frame)
    assert agent.counters.frames_processed == 3
    assert agent.spool.depth == 3
