"""Contact sheets: grids of photos with their label boxes drawn, for checking derived labels by eye.

Colours: green a human box, blue a MegaDetector box (model output), orange a box derived from a
teacher (conf printed), red a teacher box that was NOT used (below its threshold, or on a verified
empty). Each tile's caption gives the photo, its site and what the image-level label says.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from trapline.training.boxes import Box4
from trapline.training.records import ImageRecord, LabelBox, record_key
from trapline.training.writers import image_path

TILE = 320
COLUMNS = 5
PER_SHEET = 20
_GREEN, _BLUE, _ORANGE, _RED = (60, 200, 60), (230, 140, 40), (0, 160, 255), (40, 40, 230)
TeacherBoxes = Mapping[str, list[tuple[str, float, tuple[float, float, float, float]]]]


def _colour(box: LabelBox) -> tuple[int, int, int]:
    if box.derived:
        return _ORANGE
    return _BLUE if box.source.startswith("megadetector") else _GREEN


def _draw(image: np.ndarray, bbox: Box4, colour: tuple[int, int, int], text: str) -> None:
    height, width = image.shape[:2]
    x, y, w, h = bbox
    p0, p1 = (round(x * width), round(y * height)), (round((x + w) * width), round((y + h) * height))
    cv2.rectangle(image, p0, p1, colour, 2)
    if text:
        cv2.putText(image, text, (p0[0] + 2, p0[1] + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1)


def tile(record: ImageRecord, path: Path, rejected: list[tuple[float, Box4]]) -> np.ndarray:
    image = cv2.imread(str(path))
    canvas = np.zeros((TILE + 34, TILE, 3), np.uint8)
    if image is not None:
        scale = TILE / max(image.shape[:2])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for conf, bbox in rejected:
            _draw(image, bbox, _RED, f"{conf:.2f}")
        for box in record.boxes:
            _draw(image, box.bbox, _colour(box), f"{box.conf:.2f}" if box.conf is not None else "")
        canvas[34 : 34 + image.shape[0], : image.shape[1]] = image
    label = "?" if record.present is None else ",".join(record.present) or "EMPTY"
    source = record.present_source or ("teacher" if record.teacher_only else "md")
    lines = (Path(record.file).name[:40], f"{record.site[-30:]} | {label} ({source})")
    for row, text in enumerate(lines):
        cv2.putText(canvas, text, (3, 13 + 15 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (235, 235, 235), 1)
    return canvas


def write_sheets(
    records: list[ImageRecord],
    image_root: Path | Mapping[str, Path],
    teacher_boxes: TeacherBoxes,
    out: Path,
    kind: str,
) -> list[Path]:
    """PNG sheets of `records` (at most PER_SHEET each) named `<kind>-NN.png`."""
    out.mkdir(parents=True, exist_ok=True)
    sheets = []
    for start in range(0, len(records), PER_SHEET):
        tiles = []
        for record in records[start : start + PER_SHEET]:
            used = {b.bbox for b in record.boxes}
            rejected = [
                (conf, bbox)
                for _, conf, bbox in teacher_boxes.get(record_key(record), [])
                if bbox not in used and conf >= 0.15
            ]
            tiles.append(tile(record, image_path(record, image_root), rejected))
        while len(tiles) % COLUMNS:
            tiles.append(np.zeros_like(tiles[0]))
        rows = [np.hstack(tiles[i : i + COLUMNS]) for i in range(0, len(tiles), COLUMNS)]
        path = out / f"{kind}-{start // PER_SHEET + 1:02d}.png"
        cv2.imwrite(str(path), np.vstack(rows))
        sheets.append(path)
    return sheets


def sample_for_review(records: list[ImageRecord], sample: int, seed: int = 0) -> dict[str, list[ImageRecord]]:
    """The photos worth a look: derived boxes, verified empties, ambiguous ones, teacher-only ones."""
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    kinds = {
        "derived": [r for r in records if any(b.derived for b in r.boxes) and not r.teacher_only],
        "verified-empty": [r for r in records if r.present == []],
        "ambiguous": [r for r in records if r.ambiguous],
        "teacher-only": [r for r in records if r.teacher_only],
    }
    return {
        kind: sorted(rng.sample(chosen, min(sample, len(chosen))), key=record_key)
        for kind, chosen in kinds.items()
        if chosen
    }
