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
