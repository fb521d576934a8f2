"""`trapline train prepare`: ingest -> clean -> split -> YOLO dataset + VOC + JSONL/Parquet + plot."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from trapline.training.clean import CleanReport, clean
from trapline.training.ingest import ingest
from trapline.training.records import DEFAULT_CLASSES, ImageRecord, write_jsonl, write_parquet
from trapline.training.split import DEFAULT_FRACTIONS, assign_sequences, split
from trapline.training.summary import plot, tallies
from trapline.training.writers import write_voc, write_yolo_dataset

log = logging.getLogger(__name__)


@dataclass
class PreparedDataset:
    records: list[ImageRecord]
    splits: dict[str, str]
    data_yaml: Path
    report: CleanReport
    excluded_unlabelled: int
    excluded_ambiguous: int
    plot: Path


def prepare(
    image_root: Path,
    out: Path,
    classes: list[str] | None = None,
    burst_gap_s: float = 1.0,
    sequence_gap_s: float = 60.0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    **label_sources: object,
) -> PreparedDataset:
    classes = list(classes or DEFAULT_CLASSES)
    records = ingest(image_root, **label_sources)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(records, out / "records_all.jsonl")
    usable = [r for r in records if r.labelled and not r.ambiguous]
    unlabelled = sum(not r.labelled for r in records)
    ambiguous = sum(r.labelled and r.ambiguous for r in records)
    for record in usable:
        record.boxes = [b for b in record.boxes if b.category in classes]
    cleaned, report = clean(usable, burst_gap_s)
    assign_sequences(cleaned, sequence_gap_s)
    splits = split(cleaned, fractions, seed)
    data_yaml = write_yolo_dataset(cleaned, splits, image_root, out, classes)
    write_voc(cleaned, splits, out)
    write_jsonl(cleaned, out / "records.jsonl")
    write_parquet(cleaned, out / "records.parquet", splits)
    (out / "splits.json").write_text(json.dumps(splits, indent=1, sort_keys=True))
    tables = tallies(cleaned, splits)
    picture = plot(tables, out / "dataset.png")
    log.info("prepared %d images in %s", len(cleaned), out)
    return PreparedDataset(cleaned, splits, data_yaml, report, unlabelled, ambiguous, picture)
