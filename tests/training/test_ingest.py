from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trapline.training.ingest import ingest


def _photo(path: Path, when: str | None = None, colour: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[..., 2] = 200 if colour else 0
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    if when:
        exif[0x0132] = when  # DateTime
        exif[0x010F], exif[0x0110] = "RECONYX", "PC900"
    image.save(path, exif=exif)


def test_label_sources_merge_with_thresholds(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _photo(root / "siteA" / "a.jpg", "2024:05:01 10:00:00")
    _photo(root / "siteA" / "b.jpg", "2024:05:01 10:00:05", colour=False)
    _photo(root / "siteB" / "c.jpg")
    _photo(root / "siteB" / "d.jpg")
    (root / "siteB" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    md = {
        "info": {"format_version": "1.4"},
        "detection_categories": {"1": "animal", "2": "person"},
        "images": [
            {"file": "siteA/a.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]},
                                                   {"category": "2", "conf": 0.3, "bbox": [0.5, 0.5, 0.1, 0.1]}]},
            {"file": "siteA/b.jpg", "detections": [{"category": "1", "conf": 0.4, "bbox": [0.1, 0.1, 0.2, 0.2]}]},
            {"file": "siteB/c.jpg", "detections": []},
        ],
    }  # fmt: skip
    (tmp_path / "md.json").write_text(json.dumps(md))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "d.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "species.csv").write_text(
        "file,species\nimages/siteA/a.jpg,jaguar\nimages/siteB/c.jpg,empty\n"
    )

    records = {r.file: r for r in ingest(
        root, megadetector=tmp_path / "md.json", md_threshold=0.8, yolo_labels=tmp_path / "labels",
        yolo_classes=["animal"], species_csv=tmp_path / "species.csv",
    )}  # fmt: skip
    assert sorted(records) == [
        "siteA/a.jpg",
        "siteA/b.jpg",
        "siteB/c.jpg",
        "siteB/d.jpg",
    ]  # broken one skipped
    a, b, c, d = (records[k] for k in sorted(records))
    assert [box.category for box in a.boxes] == ["animal"]  # the 0.3 person is below the threshold
    assert a.species == ["jaguar"]
    assert a.captured_at == datetime(2024, 5, 1, 10, 0, 0)
    assert a.camera == "RECONYX PC900"
    assert a.site == "siteA"
    assert not a.night
    assert b.ambiguous  # only an unsure box: kept out of training, not taught as empty
    assert b.night
    assert c.labelled
    assert c.empty
    assert not c.species
    assert d.boxes[0].bbox == pytest.approx((0.4, 0.3, 0.2, 0.4))
    assert d.boxes[0].source == "yolo"


def test_image_level_labels_sites_from_metadata_and_megadetector_categories(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for name in ("owl.jpg", "empty.jpg", "deer.jpg", "peru.jpg", "squirrel.jpg"):
        _photo(root / "sw" / name)
    md = {
        "images": [
            # MegaDetector calls the owl a person and boxes a stump on a verified empty photo
            {
                "file": "sw/owl.jpg",
                "detections": [{"category": "2", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}],
            },
            {
                "file": "sw/empty.jpg",
                "detections": [{"category": "1", "conf": 0.6, "bbox": [0.5, 0.5, 0.1, 0.1]}],
            },
        ]
    }
    (tmp_path / "md.json").write_text(json.dumps(md))
    (tmp_path / "labels.csv").write_text(
        "file,label,label_kind\n"
        "sw/owl.jpg,Burrowing owl,from the source's file/folder name\n"
        "sw/empty.jpg,Empty,human image-level (groundtruth.csv)\n"
        "sw/deer.jpg,Deer,human image-level (groundtruth.csv)\n"
        "sw/peru.jpg,animal (MegaDetector prediction),MegaDetector boxes (model output)\n"
    )
    (tmp_path / "meta.jsonl").write_text(
        json.dumps({"file": "sw/deer.jpg", "camera_overlay_id": "NW1"})
        + "\n"
        + json.dumps({"file": "sw/owl.jpg", "camera_overlay_id": None})
        + "\n"
    )
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "squirrel.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    records = {Path(r.file).name: r for r in ingest(
        root, megadetector=tmp_path / "md.json", md_threshold=0.5, image_labels=tmp_path / "labels.csv",
        metadata=tmp_path / "meta.jsonl", site_field="camera_overlay_id", source_name="src",
        yolo_labels=tmp_path / "yolo", yolo_classes=["animal"],
    )}  # fmt: skip
    owl, empty, deer, peru, squirrel = (
        records[n] for n in ("owl.jpg", "empty.jpg", "deer.jpg", "peru.jpg", "squirrel.jpg")
    )
    assert [b.category for b in owl.boxes] == ["animal"] and "category from image label" in owl.boxes[
        0
    ].source
    assert (owl.present, owl.present_source) == (["animal"], "file name")
    assert empty.boxes == [] and empty.present == [] and empty.empty  # MegaDetector's box was a false one
    assert deer.present == ["animal"] and deer.ambiguous  # known animal, no box yet: the teacher's job
    assert peru.present is None and not peru.labelled  # a model's label is not image-level truth
    assert squirrel.present == ["animal"] and squirrel.present_source == "human"  # people drew its box
    assert deer.site == "src/sw/NW1" and owl.site == "src/sw/unknown" and empty.site == "src/sw"
    assert deer.source == "src"
