from __future__ import annotations

import pytest

from trapline.training.boxes import clip_md, coco_to_md, md_to_voc, md_to_yolo, voc_to_md, yolo_to_md


def test_megadetector_to_yolo_and_back_exactly() -> None:
    md = (0.25, 0.5, 0.5, 0.25)  # x_min, y_min, w, h (exact in binary)
    assert md_to_yolo(md) == (0.5, 0.625, 0.5, 0.25)
    assert yolo_to_md((0.5, 0.625, 0.5, 0.25)) == md


def test_megadetector_to_voc_pixels_and_back() -> None:
    md = (0.31, 0.48, 0.31, 0.21)  # the DESIGN.md example, on a 2048x1536 frame
    assert md_to_voc(md, 2048, 1536) == (635, 737, 1270, 1060)
    assert voc_to_md((635, 737, 1270, 1060), 2048, 1536) == pytest.approx(md, abs=0.5 / 1536)
    assert voc_to_md((0, 0, 1024, 768), 2048, 1536) == (0.0, 0.0, 0.5, 0.5)


def test_coco_pixels_to_megadetector() -> None:
    assert coco_to_md((512, 384, 1024, 768), 2048, 1536) == (0.25, 0.25, 0.5, 0.5)


def test_clip_keeps_boxes_inside_the_frame() -> None:
    assert clip_md((-0.1, 0.9, 0.3, 0.2)) == pytest.approx((0.0, 0.9, 0.2, 0.1))
