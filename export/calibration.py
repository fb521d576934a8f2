"""Calibration photos for INT8 quantization: the training split in equal shares of day, night and
empty frames, since the ranges calibrated on daylight animals alone clip night (IR) frames and the
empty frames a trap mostly sees."""

from __future__ import annotations

import random
from pathlib import Path

from trapline.training.evaluate import Dataset


def calibration_photos(dataset: Path, count: int = 96, seed: int = 0, split: str = "train") -> list[Path]:
    """Up to `count` photos of `split`: a third each of day and night photos with boxes, and of
    empty photos; a group with too few photos leaves its share to the others."""
    data = Dataset.load(dataset)
    records = [r for r in data.split(split) if not r.ambiguous]
    groups = [
        [r for r in records if r.boxes and not r.night],
        [r for r in records if r.boxes and r.night],
        [r for r in records if not r.boxes],
    ]
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    for group in groups:
        rng.shuffle(group)
    chosen: list[Path] = []
    while len(chosen) < count and any(groups):
        for group in groups:
            if group and len(chosen) < count:
                chosen.append(data.path(group.pop()))
    return chosen
