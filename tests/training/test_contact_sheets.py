from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from trapline.training.contact_sheets import COLUMNS, PER_SHEET, TILE, sample_for_review, write_sheets
from trapline.training.records import ImageRecord, LabelBox


def _record(i: int, **fields: object) -> ImageRecord:
    return ImageRecord.model_validate(
        {"file": f"p{i}.jpg", "sha256": str(i).ljust(64, "0"), "width": 64, "height": 48, "site": "s",
         "night": False, "labelled": True, **fields}
    )  # fmt: skip


def test_sheets_draw_derived_boxes_and_rejected_teacher_boxes(tmp_path: Path) -> None:
    for i in range(PER_SHEET + 1):
        cv2.imwrite(str(tmp_path / f"p{i}.jpg"), np.full((48, 64, 3), 90, np.uint8))
    derived = LabelBox(
        category="animal", bbox=(0.1, 0.1, 0.5, 0.5), conf=0.8, source="teacher:t", derived=True
    )
    records = [
        _record(i, boxes=[derived], present=["animal"], present_source="human") for i in range(PER_SHEET + 1)
    ]
    teacher = {"p0.jpg": [("animal", 0.3, (0.6, 0.6, 0.3, 0.3))]}  # below threshold: drawn red
    sheets = write_sheets(records, tmp_path, teacher, tmp_path / "sheets", "derived")
    assert [p.name for p in sheets] == ["derived-01.png", "derived-02.png"]
    first = cv2.imread(str(sheets[0]))
    assert first is not None
    assert first.shape[1] == COLUMNS * TILE and first.shape[0] == (PER_SHEET // COLUMNS) * (TILE + 34)
    tile = first[34 : 34 + TILE, :TILE]
    assert (np.abs(tile.astype(int) - (0, 160, 255)).sum(axis=2) < 60).any()  # an orange (derived) box
    assert (np.abs(tile.astype(int) - (40, 40, 230)).sum(axis=2) < 60).any()  # a red (unused) box


def test_review_sample_takes_each_kind() -> None:
    box = LabelBox(category="animal", bbox=(0.1, 0.1, 0.2, 0.2), source="teacher:t", derived=True)
    records = [
        _record(0, boxes=[box], present=["animal"]),
        _record(1, present=[]),
        _record(2, ambiguous=True, present=["animal"]),
        _record(3, teacher_only=True),
    ]
    kinds = sample_for_review(records, sample=5)
    assert {k: [r.file for r in v] for k, v in kinds.items()} == {
        "derived": ["p0.jpg"], "verified-empty": ["p1.jpg"], "ambiguous": ["p2.jpg"], "teacher-only": ["p3.jpg"],
    }  # fmt: skip
