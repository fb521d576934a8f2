"""Cleaning: exact duplicates out, bursts thinned, but rare classes never thinned.

Burst thinning follows the Sierra de las Nieves / Doñana benchmark: consecutive images from one
camera less than `burst_gap_s` apart are near-copies; keep the first of each burst, except for
classes with at most the median number of images, which keep every image.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from dataclasses import dataclass

from trapline.training.records import ImageRecord, record_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CleanReport:
    duplicates: int
    thinned: int
    protected_classes: tuple[str, ...]


def drop_duplicates(records: list[ImageRecord]) -> tuple[list[ImageRecord], int]:
    seen: set[str] = set()
    kept = []
    for record in sorted(records, key=lambda r: r.file):
        if record.sha256 in seen:
            log.info("dropping %s: same bytes as an earlier image", record.file)
            continue
        seen.add(record.sha256)
        kept.append(record)
    return kept, len(records) - len(kept)


def camera_key(record: ImageRecord) -> str:
    return f"{record.site}|{record.camera or ''}"


def thin_bursts(records: list[ImageRecord], burst_gap_s: float) -> tuple[list[ImageRecord], tuple[str, ...]]:
    counts = Counter(r.primary_class for r in records)
    median = statistics.median(counts.values()) if counts else 0
    protected = tuple(sorted(c for c, n in counts.items() if n <= median))
    timed = sorted((r for r in records if r.captured_at), key=lambda r: (camera_key(r), r.captured_at))
    drop: set[str] = set()
    previous: ImageRecord | None = None
    for record in timed:
        if (
            previous is not None
            and camera_key(previous) == camera_key(record)
            and previous.captured_at is not None
            and record.captured_at is not None
            and (record.captured_at - previous.captured_at).total_seconds() < burst_gap_s
            and record.primary_class not in protected
        ):
            drop.add(record_key(record))
            continue  # the burst is measured from the image kept
        previous = record
    return [r for r in records if record_key(r) not in drop], protected


def clean(records: list[ImageRecord], burst_gap_s: float = 1.0) -> tuple[list[ImageRecord], CleanReport]:
    unique, duplicates = drop_duplicates(records)
    thinned, protected = thin_bursts(unique, burst_gap_s)
    return thinned, CleanReport(duplicates, len(unique) - len(thinned), protected)
