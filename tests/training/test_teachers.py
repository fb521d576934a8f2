"""Teacher runs: MegaDetector batch JSON out, resumable, failures as data; the real MegadetectorLite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CAMTRAP, SHARED, needs_shared
from trapline.training import teachers
from trapline.training.boxes import md_iou
from trapline.training.teachers import read_teacher, run_teacher


def _fake_detector(calls: list[int]) -> teachers.DetectFn:
    def detect(image: np.ndarray) -> list[teachers.TeacherDetection]:
        calls.append(image.shape[0])
        return [("animal", 0.8, (0.1, 0.2, 0.3, 0.4), None), ("dog", 0.9, (0.0, 0.0, 0.1, 0.1), None)]

    return detect


def test_writes_megadetector_json_records_failures_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    root = tmp_path / "images"
    root.mkdir()
    cv2.imwrite(str(root / "a.jpg"), np.zeros((20, 30, 3), np.uint8))
    (root / "broken.jpg").write_bytes(b"not a photo")
    calls: list[int] = []
    monkeypatch.setattr(teachers, "teacher_detector", lambda *args, **kwargs: _fake_detector(calls))
    out = tmp_path / "teacher.json"
    run_teacher(root, ["a.jpg", "broken.jpg"], Path("m.onnx"), "yolox", out)
    data = json.loads(out.read_text())
    assert data["info"]["format_version"] == "1.4" and "teacher" in data["info"]["detector"]
    images = {i["file"]: i for i in data["images"]}
    assert images["broken.jpg"]["failure"] and images["broken.jpg"]["detections"] is None
    assert images["a.jpg"]["detections"] == [{"category": "1", "conf": 0.8, "bbox": [0.1, 0.2, 0.3, 0.4]}]
    assert read_teacher(out) == {"a.jpg": [("animal", 0.8, (0.1, 0.2, 0.3, 0.4))]}  # failures left out
    cv2.imwrite(str(root / "b.jpg"), np.zeros((20, 30, 3), np.uint8))
    run_teacher(root, ["a.jpg", "broken.jpg", "b.jpg"], Path("m.onnx"), "yolox", out)
    assert calls == [20, 20]  # the rerun only did b.jpg
    assert len(json.loads(out.read_text())["images"]) == 3


def test_megadetector_lite_finds_the_jaguar_megadetector_found(tmp_path: Path) -> None:
    model = needs_shared(SHARED / "weights" / "mdlite-yolox-tiny-640.onnx")
    photo = "jaguar/RL 1_20051028_2159.jpg"
    md = json.loads((needs_shared(CAMTRAP) / "megadetector.json").read_text())
    [truth] = [d["bbox"] for i in md["images"] if i["file"] == photo for d in i["detections"]]
    root = tmp_path / "images"
    (root / "jaguar").mkdir(parents=True)
    shutil.copyfile(CAMTRAP / "images" / photo, root / photo)
    found = read_teacher(run_teacher(root, [photo], model, "yolox", tmp_path / "t.json"))[photo]
    best = max(found, key=lambda d: d[1])
    assert best[0] == "animal" and best[1] > 0.5
    assert md_iou(best[2], tuple(truth)) > 0.7
