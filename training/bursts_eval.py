"""`trapline train bursts`: what sequence smoothing (edge.bursts) does on real bursts.

Each multi-frame sequence of the dataset (a camera's photos less than the dataset's sequence gap
apart, or frames of one video clip) is replayed through the trap's BurstGrouper with the model's
detections at its operating thresholds; the sequence summary says animal or not. The truth of a
sequence: animal when a label made by people or file names puts one in any of its frames, empty
when such labels call every frame empty; otherwise, as a second tier, the frames' boxes (MegaDetector
or teacher output) decide, and a sequence with unsure frames is left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from trapline.contracts import Detection, as_category
from trapline.edge.bursts import BurstGrouper, BurstState
from trapline.training.evaluate import Dataset, LoadedModel, predict_split
from trapline.training.metrics import ImageResult
from trapline.training.records import ImageRecord, record_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Burst:
    sequence: str
    split: str
    site: str
    truth: bool  # an animal in the sequence
    truth_source: str  # "labels" (people, file names) or "boxes" (model output)
    frames: list[list[Detection]]


def _truth(records: list[ImageRecord]) -> tuple[bool, str] | None:
    if all(r.present is not None for r in records):
        return any("animal" in (r.present or []) for r in records), "labels"
    if any("animal" in (r.present or []) for r in records):
        return True, "labels"
    if any(r.ambiguous for r in records):
        return None
    return any(b.category == "animal" for r in records for b in r.boxes), "boxes"


def _detections(result: ImageResult, thresholds: dict[str, float]) -> list[Detection]:
    out = []
    for box in result.predicted:
        category = as_category(box.category)
        if category is not None and box.conf >= thresholds.get(box.category, 1.1):
            x1, y1, x2, y2 = box.xyxy
            out.append(Detection(category=category, conf=round(box.conf, 4), bbox=(x1, y1, x2 - x1, y2 - y1)))
    return out


def _in(sequences: set[str]) -> Callable[[ImageRecord], bool]:
    chosen = frozenset(sequences)
    return lambda record: record.sequence in chosen


def real_bursts(
    model: LoadedModel, dataset: Dataset, splits: list[str], thresholds: dict[str, float]
) -> list[Burst]:
    bursts = []
    for split in splits:
        members: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in dataset.split(split):
            members[record.sequence].append(record)
        wanted = {seq for seq, records in members.items() if len(records) >= 2}
        if not wanted:
            continue
        results = {r.key: r for r in predict_split(model, dataset, split, keep=_in(wanted))}
        for sequence in sorted(wanted):
            records = sorted(
                members[sequence], key=lambda r: (r.captured_at or T0.replace(tzinfo=None), r.file)
            )
            truth = _truth(records)
            if truth is None:
                continue
            frames = [_detections(results[record_key(r)], thresholds) for r in records]
            bursts.append(Burst(sequence, split, records[0].site, truth[0], truth[1], frames))
    return bursts


def summarise(bursts: list[Burst], lone_min_conf: float) -> dict[str, Any]:
    """Sequence-level calls with smoothing at `lone_min_conf` (0: off)."""
    called, demoted = [], 0
    for burst in bursts:
        grouper = BurstGrouper("bench", 3.0, ("animal", "person", "vehicle"), BurstState(), lone_min_conf)
        for index, detections in enumerate(burst.frames):
            grouper.add(T0 + timedelta(seconds=index), detections)
        seq = grouper.state.open
        demoted += seq is not None and "animal" in grouper.demoted(seq)
        summary = grouper.close()
        called.append(summary is not None and "animal" in summary.categories)
    truth = [b.truth for b in bursts]
    empty = [c for c, t in zip(called, truth, strict=True) if not t]
    animal = [c for c, t in zip(called, truth, strict=True) if t]
    return {
        "lone_min_conf": lone_min_conf,
        "sequences": len(bursts),
        "empty_sequences": len(empty),
        "animal_sequences": len(animal),
        "accuracy": sum(c == t for c, t in zip(called, truth, strict=True)) / len(bursts) if bursts else None,
        "false_alarms": sum(empty),
        "missed": sum(not c for c in animal),
        "demoted": demoted,
    }


def bursts_markdown(rows: list[dict[str, Any]], thresholds: dict[str, float]) -> str:
    """The smoothing table as a Markdown section."""
    levels = ", ".join(f"{c} {v:.2f}" for c, v in thresholds.items())
    lines = [
        "## Sequence smoothing on real bursts",
        "",
        f"Each multi-frame sequence replayed through the trap's BurstGrouper (detections at {levels});"
        " lone_min_conf 0 is smoothing off.",
        "",
        "| split | lone_min_conf | sequences (empty / animal) | accuracy | false alarms | missed | demoted |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        accuracy = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        counts = f"{row['sequences']} ({row['empty_sequences']} / {row['animal_sequences']})"
        cells = [row["split"], f"{row['lone_min_conf']:.2f}", counts, accuracy]
        cells += [str(row["false_alarms"]), str(row["missed"]), str(row["demoted"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
