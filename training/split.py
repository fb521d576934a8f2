"""Train/val/test split that never cuts a sequence and balances sites and classes.

Neighbouring frames of one burst in train and test inflate every metric, so whole sequences are
assigned to a split. Sequences come from the label source (COCO Camera Traps `seq_id`), else from
time (same camera, gaps under `sequence_gap_s`), else from the file name with its trailing frame
number removed (video frames `clip-123-0.jpg`, `clip-123-161.jpg` are one clip).
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

from trapline.training.clean import camera_key
from trapline.training.records import ImageRecord, record_key

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.64, 0.16, 0.20)
_TRAILING_NUMBER = re.compile(r"[-_. ]?(?:frame)?\d+$", re.IGNORECASE)


def _name_group(file: str) -> str:
    folder, _, name = file.rpartition("/")
    stem = name.rsplit(".", 1)[0]
    # one trailing number only: the frame ("clip-123-161" -> "clip-123"); more would merge photos
    # whose names end in a date and time ("RL 5_20051003_1721") into one "sequence"
    shorter = _TRAILING_NUMBER.sub("", stem)
    return f"{folder}/{shorter or stem}"


def assign_sequences(records: list[ImageRecord], sequence_gap_s: float = 60.0) -> None:
    """Fill `record.sequence` where the label source gave none."""
    timed = sorted(
        ((r, r.captured_at) for r in records if not r.sequence and r.captured_at),
        key=lambda item: (camera_key(item[0]), item[1]),
    )
    current, previous = "", None
    for record, captured_at in timed:
        if (
            previous is None
            or camera_key(previous) != camera_key(record)
            or previous.captured_at is None
            or (captured_at - previous.captured_at).total_seconds() >= sequence_gap_s
        ):
            current = f"time:{camera_key(record)}:{captured_at.isoformat()}"
        record.sequence = current
        previous = record
    for record in records:
        if not record.sequence:
            record.sequence = f"name:{_name_group(record.file)}"


def split(
    records: list[ImageRecord],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """file -> split. Greedy: big sequences first, each to the split furthest below its target
    for the sequence's (site, class) keys and for overall size."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} do not add up to 1")
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[record.sequence].append(record)
    keys_total: Counter[str] = Counter()
    for record in records:
        keys_total.update((f"site:{record.site}", f"class:{record.primary_class}"))
    have: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    order = sorted(groups)
    random.Random(seed).shuffle(order)  # noqa: S311 - sampling, not security
    order.sort(key=lambda g: -len(groups[g]))
    assignment: dict[str, str] = {}
    for group in order:
        members = groups[group]
        group_keys: Counter[str] = Counter()
        for record in members:
            group_keys.update((f"site:{record.site}", f"class:{record.primary_class}"))

        def deficit(
            index: int, members: list[ImageRecord] = members, group_keys: Counter[str] = group_keys
        ) -> float:
            name = SPLITS[index]
            score = sum(
                (fractions[index] * keys_total[k] - have[name][k]) / keys_total[k] for k in group_keys
            )
            overall = (fractions[index] * len(records) - size[name]) / len(records)
            return score / len(group_keys) + overall

        best = max(range(len(SPLITS)), key=deficit)
        name = SPLITS[best]
        have[name].update(group_keys)
        size[name] += len(members)
        for record in members:
            assignment[record.file] = name
    return assignment


def split_by_site(
    records: list[ImageRecord],
    test_sites: list[str] | None = None,
    val_sites: list[str] | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, str]:
    """file key -> split, whole sites at a time: no location is in two splits, so no sequence is.

    Named sites go where they are named and every other site to train. With none named, sites are
    dealt greedily, biggest first, each to the split furthest below its share of images.
    """
    sites: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        sites[record.site].append(record)
    unknown = (set(test_sites or []) | set(val_sites or [])) - set(sites)
    if unknown:
        raise ValueError(f"split names sites that hold no photos: {sorted(unknown)}; sites: {sorted(sites)}")
    chosen: dict[str, str] = {}
    if test_sites or val_sites:
        for site in sites:
            chosen[site] = (
                "test" if site in (test_sites or []) else "val" if site in (val_sites or []) else "train"
            )
    else:
        order = sorted(sites)
        random.Random(seed).shuffle(order)  # noqa: S311 - sampling, not security
        order.sort(key=lambda s: -len(sites[s]))
        size = dict.fromkeys(SPLITS, 0)
        for site in order:
            name = max(SPLITS, key=lambda n: fractions[SPLITS.index(n)] * len(records) - size[n])
            chosen[site] = name
            size[name] += len(sites[site])
    assignment = {record_key(r): chosen[r.site] for r in records}
    spans: dict[str, set[str]] = defaultdict(set)
    for record in records:
        spans[record.sequence].add(assignment[record_key(record)])
    cut = [seq for seq, names in spans.items() if len(names) > 1]
    if cut:
        raise ValueError(f"sequences span splits (a sequence crosses sites?): {cut[:5]}")
    return assignment
