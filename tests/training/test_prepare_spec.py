"""A dataset spec end to end on real Southwest photos: teachers, derived boxes, split by camera."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHARED, needs_shared
from trapline.edge.config import COCO_STAND_IN
from trapline.training.prepare import prepare_spec
from trapline.training.spec import DatasetSpec

PHOTOS = {  # file: (camera, human label)
    "MDF0.jpg": ("WP2", "Empty"), "MDF10.jpg": ("NW2", "Empty"), "MDF2.jpg": ("NW1", "Empty"),
    "MDF100.jpg": ("NW2", "Bobcat"), "MDF104.jpg": ("WP2", "Moose"), "MDF105.jpg": ("WP2", "Moose"),
    "MDF103.jpg": ("WP1", "Moose"), "MDF106.jpg": ("WP1", "Moose"), "MDF211.jpg": ("WP2", "vehicle"),
    "MDF212.jpg": ("NW2", "vehicle"),
}  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    source = needs_shared(SHARED / "data" / "camtrap-train")
    root = tmp_path_factory.mktemp("data")
    images = root / "train" / "images" / "animl-r_southwest"
    images.mkdir(parents=True)
    labels, metadata = ["file,label,label_kind"], []
    for name, (camera, label) in PHOTOS.items():
        shutil.copyfile(source / "images" / "animl-r_southwest" / name, images / name)
        labels.append(f"animl-r_southwest/{name},{label},human image-level (groundtruth.csv)")
        metadata.append(json.dumps({"file": f"animl-r_southwest/{name}", "camera_overlay_id": camera}))
    (root / "train" / "image_labels.csv").write_text("\n".join(labels) + "\n")
    (root / "train" / "metadata.jsonl").write_text("\n".join(metadata) + "\n")
    spec = DatasetSpec.model_validate(
        {
            "sources": [{"name": "train", "images": "train/images", "image_labels": "train/image_labels.csv",
                         "metadata": "train/metadata.jsonl", "site_field": "camera_overlay_id"}],
            "teachers": [
                {"model": str(needs_shared(SHARED / "weights" / "mdlite-yolox-tiny-640.onnx")),
                 "kind": "yolox", "classes": ["animal"]},
                {"model": str(COCO_STAND_IN), "kind": "yolov8", "classes": ["person", "vehicle"]},
            ],
            "split": {"test_sites": ["train/animl-r_southwest/NW1"], "val_sites": ["train/animl-r_southwest/WP1"]},
            "contact_sheet_sample": 4,
        }
    )  # fmt: skip
    out = root / "dataset"
    return out, prepare_spec(spec.resolved(root), out)


def test_photos_are_split_by_camera(prepared: tuple[Path, object]) -> None:
    _, result = prepared
    split_of = {r.file.split("/")[-1]: result.splits[f"train/{r.file}"] for r in result.records}  # type: ignore[attr-defined]
    assert split_of["MDF2.jpg"] == "test"
    assert split_of["MDF103.jpg"] == split_of["MDF106.jpg"] == "val"
    assert {split_of[n] for n, (camera, _) in PHOTOS.items() if camera in ("WP2", "NW2")} == {"train"}


def test_teachers_derive_marked_boxes_and_verified_empties_stay_empty(prepared: tuple[Path, object]) -> None:
    out, result = prepared
    records = {r.file.split("/")[-1]: r for r in result.records}  # type: ignore[attr-defined]
    for name in ("MDF0.jpg", "MDF10.jpg", "MDF2.jpg"):
        assert records[name].empty and records[name].present == []
    moose = [
        records[n]
        for n in ("MDF104.jpg", "MDF105.jpg", "MDF103.jpg", "MDF106.jpg")
        if not records[n].ambiguous
    ]
    assert moose, "the teacher found none of the four moose"
    assert all(b.derived and b.source == "teacher:mdlite-yolox-tiny-640" for r in moose for b in r.boxes)
    assert all(b.category == "animal" for r in moose for b in r.boxes)
    trucks = [records[n] for n in ("MDF211.jpg", "MDF212.jpg") if not records[n].ambiguous]
    assert trucks and all("vehicle" in {b.category for b in r.boxes} for r in trucks)
    assert all(b.source == "teacher:yolov8n-coco-int8" for r in trucks for b in r.boxes)
    teacher_json = json.loads((out / "teachers" / "train--mdlite-yolox-tiny-640.json").read_text())
    assert teacher_json["info"]["format_version"] == "1.4" and "teacher" in teacher_json["info"]["detector"]


def test_thresholds_split_table_and_contact_sheets_are_written(prepared: tuple[Path, object]) -> None:
    out, result = prepared
    chosen = {c.teacher: c for c in result.thresholds}  # type: ignore[attr-defined]
    assert set(chosen) == {"mdlite-yolox-tiny-640", "yolov8n-coco-int8"}
    assert chosen["mdlite-yolox-tiny-640"].negatives == 2  # the two train/val empties; NW1 is test
    rows = {row["split"]: row for row in json.loads((out / "split.json").read_text())}
    assert rows["test"]["verified empties"] == 1 and rows["test"]["sites"] == 1
    assert "| split | images | boxes |" in (out / "split.md").read_text()
    assert (out / "contact_sheets" / "verified-empty-01.png").stat().st_size > 10_000
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "animal", 1: "person", 2: "vehicle"}
    lines = (out / "records.jsonl").read_text().splitlines()
    assert any('"derived":true' in line for line in lines)
