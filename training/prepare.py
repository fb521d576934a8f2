"""`trapline train prepare`: ingest -> clean -> split -> YOLO dataset + VOC + JSONL/Parquet + plot.

With a dataset spec (training.spec) it also runs the teachers, derives boxes (training.derive),
splits by site, writes the split table and contact sheets for checking derived labels by eye.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trapline.training.clean import CleanReport, clean, drop_duplicates, thin_bursts
from trapline.training.contact_sheets import sample_for_review, write_sheets
from trapline.training.derive import Teacher, ThresholdChoice, choose_threshold, derive
from trapline.training.ingest import ingest
from trapline.training.label_space import FALLBACK, assign_coco_classes
from trapline.training.records import (
    DEFAULT_CLASSES,
    ImageRecord,
    LabelBox,
    record_key,
    write_jsonl,
    write_parquet,
)
from trapline.training.spec import DatasetSpec
from trapline.training.split import DEFAULT_FRACTIONS, assign_sequences, split, split_by_site
from trapline.training.summary import plot, split_markdown, split_table, tallies
from trapline.training.teachers import read_teacher, read_teacher_classes, run_teacher
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
    split_rows: list[dict[str, object]] = field(default_factory=list)
    thresholds: list[ThresholdChoice] = field(default_factory=list)
    derived: Counter[str] = field(default_factory=Counter)
    sheets: list[Path] = field(default_factory=list)


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
    (out / "sources.json").write_text(json.dumps({"": str(image_root.resolve())}))
    write_parquet(cleaned, out / "records.parquet", splits)
    (out / "splits.json").write_text(json.dumps(splits, indent=1, sort_keys=True))
    tables = tallies(cleaned, splits)
    picture = plot(tables, out / "dataset.png")
    log.info("prepared %d images in %s", len(cleaned), out)
    return PreparedDataset(cleaned, splits, data_yaml, report, unlabelled, ambiguous, picture)


def _teachers(
    spec: DatasetSpec, records: list[ImageRecord], splits: dict[str, str], out: Path
) -> tuple[list[Teacher], list[ThresholdChoice]]:
    teachers, choices = [], []
    for teacher_spec in spec.teachers:
        boxes = {}
        for source in spec.sources:
            files = [r.file for r in records if r.source == source.name]
            result = run_teacher(
                source.images,
                files,
                teacher_spec.model,
                teacher_spec.kind,
                out / "teachers" / f"{source.name}--{teacher_spec.model.stem}.json",
            )
            boxes.update({f"{source.name}/{file}": dets for file, dets in read_teacher(result).items()})
        fixed = teacher_spec.threshold
        teacher = Teacher(
            teacher_spec.model.stem,
            tuple(teacher_spec.classes),
            boxes,
            fixed if isinstance(fixed, float) else 0.0,
            teacher_spec.ignore_below,
        )
        if fixed == "auto":
            choice = choose_threshold(teacher, records, splits)
            teacher.threshold = choice.threshold
            choices.append(choice)
            log.info(
                "%s threshold %.2f (best balanced accuracy on %d+%d human-labelled train/val photos)",
                teacher.name, choice.threshold, choice.positives, choice.negatives,
            )  # fmt: skip
        teachers.append(teacher)
    return teachers, choices


def _coco_label_space(
    spec: DatasetSpec, records: list[ImageRecord], out: Path
) -> tuple[list[str], Callable[[LabelBox], str]]:
    """The COCO teacher's 80 class names, and each box's COCO class (training.label_space)."""
    from trapline.edge.backends import load_backend
    from trapline.edge.model_info import COCO_CATEGORIES, _literal

    coco = next((t for t in spec.teachers if t.kind == "yolov8"), None)
    if coco is None:
        raise ValueError("label_space coco needs a yolov8 (COCO) teacher in the spec")
    raw = _literal(load_backend(coco.model).info.metadata.get("names"))
    if not isinstance(raw, dict) or len(raw) != 80:
        raise ValueError(f"{coco.model}: not an 80-class COCO model")
    names = [str(raw[k]) for k in sorted(raw, key=int)]
    seen: dict[str, list[tuple[tuple[float, float, float, float], str, float]]] = {}
    for source in spec.sources:
        result = out / "teachers" / f"{source.name}--{coco.model.stem}.json"
        seen.update({f"{source.name}/{f}": v for f, v in read_teacher_classes(result).items()})
    used = assign_coco_classes(records, seen, {n: COCO_CATEGORIES.get(n) for n in names})
    log.info("COCO label space: %s", ", ".join(f"{n} {c}" for n, c in used.most_common()))
    return names, lambda box: box.coco_class or FALLBACK[box.category]


def prepare_spec(spec: DatasetSpec, out: Path) -> PreparedDataset:
    """Build the dataset a spec describes (paths already resolved, see DatasetSpec.resolved)."""
    roots = {source.name: source.images for source in spec.sources}
    records: list[ImageRecord] = []
    for source in spec.sources:
        records += ingest(
            source.images,
            megadetector=source.megadetector,
            md_threshold=spec.md_threshold,
            md_ignore_below=spec.md_ignore_below,
            md_prefix=None,
            yolo_labels=source.yolo_labels,
            yolo_classes=source.yolo_classes,
            yolo_labels_kind=source.yolo_labels_kind,
            species_csv=source.species,
            image_labels=source.image_labels,
            metadata=source.metadata,
            site_field=source.site_field,
            source_name=source.name,
        )
    for record in records:
        record.site = spec.site_aliases.get(record.site, record.site)
    out.mkdir(parents=True, exist_ok=True)
    records, duplicates = drop_duplicates(records)
    assign_sequences(records, spec.sequence_gap_s)
    splits = split_by_site(
        records, spec.split.test_sites, spec.split.val_sites, spec.split.fractions, spec.split.seed
    )
    teachers, choices = _teachers(spec, records, splits, out)
    derived = derive(records, teachers)
    for record in records:
        record.boxes = [b for b in record.boxes if b.category in spec.classes]
    classes, label_of = list(spec.classes), None
    if spec.label_space == "coco":
        classes, label_of = _coco_label_space(spec, records, out)
    unlabelled = [r for r in records if not r.labelled]
    records = [r for r in records if r.labelled]
    # bursts are thinned in train only: val and test keep whole sequences (smoothing is measured there)
    train = [r for r in records if splits[record_key(r)] == "train" and not r.ambiguous]
    kept, protected = thin_bursts(train, spec.burst_gap_s)
    thinned = {record_key(r) for r in train} - {record_key(r) for r in kept}
    records = [r for r in records if record_key(r) not in thinned]
    splits = {record_key(r): splits[record_key(r)] for r in records}
    data_yaml = write_yolo_dataset(records, splits, roots, out, classes, label_of)
    write_voc(records, splits, out)
    write_jsonl(records, out / "records.jsonl")
    (out / "sources.json").write_text(json.dumps({k: str(v.resolve()) for k, v in roots.items()}))
    write_parquet(records, out / "records.parquet", splits)
    (out / "splits.json").write_text(json.dumps(splits, indent=1, sort_keys=True))
    rows = split_table(records, splits)
    (out / "split.md").write_text(split_markdown(rows))
    (out / "split.json").write_text(json.dumps(rows, indent=1))
    (out / "teacher_thresholds.json").write_text(
        json.dumps({"chosen": [asdict(c) for c in choices], "derived": dict(derived)}, indent=1)
    )
    all_teacher_boxes: dict[str, list[tuple[str, float, tuple[float, float, float, float]]]] = {}
    for teacher in teachers:
        for key, dets in teacher.boxes.items():
            all_teacher_boxes.setdefault(key, []).extend(dets)
    sheets = []
    for kind, chosen in sample_for_review(records, spec.contact_sheet_sample, spec.split.seed).items():
        sheets += write_sheets(chosen, roots, all_teacher_boxes, out / "contact_sheets", kind)
    picture = plot(tallies(records, splits), out / "dataset.png")
    report = CleanReport(duplicates, len(thinned), protected)
    ambiguous = sum(r.ambiguous for r in records)
    log.info("prepared %d images in %s", len(records), out)
    return PreparedDataset(
        records,
        splits,
        data_yaml,
        report,
        len(unlabelled),
        ambiguous,
        picture,
        rows,
        choices,
        derived,
        sheets,
    )
