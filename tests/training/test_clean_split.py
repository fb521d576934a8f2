from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from trapline.training.clean import clean
from trapline.training.records import ImageRecord, LabelBox
from trapline.training.split import assign_sequences, split

T0 = datetime(2024, 5, 1, 10, 0, 0)


def _record(
    name: str, seconds: float | None, species: str, site: str = "s1", sha: str | None = None
) -> ImageRecord:
    return ImageRecord(
        file=f"{site}/{name}", sha256=sha or name.ljust(64, "0"), width=100, height=100,
        captured_at=T0 + timedelta(seconds=seconds) if seconds is not None else None,
        camera="cam", site=site, night=False, species=[species], labelled=True,
        boxes=[LabelBox(category="animal", bbox=(0.1, 0.1, 0.2, 0.2), source="test")],
    )  # fmt: skip


def test_bursts_thinned_but_rare_classes_kept() -> None:
    records = (
        [_record(f"deer{i}", i * 0.5, "deer") for i in range(6)]  # one 2.5 s burst at 0.5 s steps
        + [_record(f"fox{i}", 100 + i * 0.5, "fox") for i in range(3)]  # rare: never thinned
        + [_record(f"boar{i}", 200 + i * 10, "boar") for i in range(4)]  # 10 s apart: not a burst
        + [_record("dup", 300, "boar", sha="deer0".ljust(64, "0"))]  # same bytes as deer0
    )
    kept, report = clean(records, burst_gap_s=1.0)
    names = sorted(r.file.split("/")[1] for r in kept)
    assert report.duplicates == 1
    assert "fox" in report.protected_classes
    assert names == ["boar0", "boar1", "boar2", "boar3", "deer0", "deer2", "deer4", "fox0", "fox1", "fox2"]
    assert report.thinned == 3


def test_sequences_never_span_two_splits() -> None:
    records = []
    for site in ("s1", "s2", "s3"):
        for burst in range(10):
            for frame in range(3):
                records.append(
                    _record(
                        f"b{burst}f{frame}", burst * 600 + frame * 2, "deer" if burst % 3 else "fox", site
                    )
                )
    # video frames without timestamps: grouped by clip name
    records += [_record(f"clip7-{i}", None, "coyote", "s4") for i in (0, 100, 200)]
    assign_sequences(records, sequence_gap_s=60)
    assignment = split(records, seed=3)
    by_sequence: dict[str, set[str]] = defaultdict(set)
    for record in records:
        by_sequence[record.sequence].add(assignment[record.file])
    assert len(by_sequence) == 31
    assert all(len(splits) == 1 for splits in by_sequence.values())
    counts = {s: sum(1 for v in assignment.values() if v == s) for s in ("train", "val", "test")}
    assert counts["train"] > counts["test"] >= counts["val"] > 0
    for site in ("s1", "s2", "s3"):  # every site appears in train and test
        assert {assignment[r.file] for r in records if r.site == site} >= {"train", "test"}


def test_real_dataset_split_has_no_leakage(camtrap: Path, tmp_path: Path) -> None:
    from trapline.training.prepare import prepare

    prepared = prepare(
        camtrap / "images", tmp_path / "ds", megadetector=camtrap / "megadetector.json", md_threshold=0.5,
        yolo_labels=camtrap / "labels" / "pw-example", yolo_classes=["animal"], species_csv=camtrap / "species.csv",
    )  # fmt: skip
    by_sequence: dict[str, set[str]] = defaultdict(set)
    for record in prepared.records:
        by_sequence[record.sequence].add(prepared.splits[record.file])
    assert all(len(s) == 1 for s in by_sequence.values())
    # the re-encoded copies of one video (ids -39858- and -56906-) are one sequence
    cougar = {r.sequence for r in prepared.records if "cougar-" in r.file and "video-frames" in r.file}
    assert len(cougar) == 1
    assert (tmp_path / "ds" / "dataset.png").stat().st_size > 10_000
    assert (tmp_path / "ds" / "records.parquet").exists()
    assert len(list((tmp_path / "ds" / "voc" / "Annotations").glob("*.xml"))) == len(prepared.records)


def test_split_by_site_keeps_every_site_whole() -> None:
    from trapline.training.split import split_by_site

    records = [_record(f"p{i}", i * 1000, "deer", site) for site in ("a", "b", "c", "d") for i in range(5)]
    assign_sequences(records)
    named = split_by_site(records, test_sites=["a"], val_sites=["b"])
    assert {named[r.file] for r in records if r.site == "a"} == {"test"}
    assert {named[r.file] for r in records if r.site == "b"} == {"val"}
    assert {named[r.file] for r in records if r.site in ("c", "d")} == {"train"}
    dealt = split_by_site(records, seed=1)
    for site in ("a", "b", "c", "d"):
        assert len({dealt[r.file] for r in records if r.site == site}) == 1
    assert set(dealt.values()) == {"train", "val", "test"}


def test_split_by_site_refuses_unknown_sites_and_sequences_across_sites() -> None:
    import pytest

    from trapline.training.split import split_by_site

    records = [_record("x", 0, "deer", "a"), _record("y", 0, "deer", "b")]
    with pytest.raises(ValueError, match="hold no photos"):
        split_by_site(records, test_sites=["nowhere"])
    for record in records:
        record.sequence = "one"
    with pytest.raises(ValueError, match="span splits"):
        split_by_site(records, test_sites=["a"])


def test_video_frames_group_by_clip_but_dated_names_do_not_merge() -> None:
    records = [_record(name, None, "jaguar", "j") for name in ("RL 5_20051003_1721", "RL 7_20051015_0143")]
    records += [_record(f"clip-123-{i}", None, "cougar", "v") for i in (0, 161)]
    assign_sequences(records)
    assert records[0].sequence != records[1].sequence
    assert records[2].sequence == records[3].sequence
