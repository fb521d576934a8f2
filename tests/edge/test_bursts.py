from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trapline.contracts import Category, Detection, SequenceSummary
from trapline.edge.bursts import BurstGrouper, BurstState

T0 = datetime(2026, 11, 22, 3, 14, 7, tzinfo=UTC)


def _det(category: Category, conf: float) -> Detection:
    return Detection(category=category, conf=conf, bbox=(0.1, 0.1, 0.2, 0.2))


def _grouper(state: BurstState | None = None) -> BurstGrouper:
    return BurstGrouper("trap-07", 3.0, ("animal", "person", "vehicle"), state or BurstState())


def test_frames_within_the_gap_share_a_sequence_and_the_summary_adds_up() -> None:
    grouper = _grouper()
    assert grouper.add(T0, [_det("animal", 0.9), _det("animal", 0.5)]) == ("trap-07:seq:000000001", 0, None)
    assert grouper.add(T0 + timedelta(seconds=2), [_det("animal", 0.7), _det("person", 0.4)])[:2] == (
        "trap-07:seq:000000001",
        1,
    )
    assert grouper.add(T0 + timedelta(seconds=4.5), [])[:2] == ("trap-07:seq:000000001", 2)
    seq_id, index, closed = grouper.add(T0 + timedelta(seconds=8), [_det("animal", 0.3)])
    assert (seq_id, index) == ("trap-07:seq:000000002", 0)
    assert closed is not None
    assert closed.frame_count == 3
    assert closed.first_frame_at == T0 and closed.last_frame_at == T0 + timedelta(seconds=4.5)
    assert closed.categories["animal"].max_count == 2
    assert closed.categories["animal"].best_conf == 0.9
    assert closed.categories["person"].max_count == 1
    assert "vehicle" not in closed.categories
    # per frame the best score of each category, averaged over the 3 frames
    assert closed.mean_class_probabilities == pytest.approx(
        {"animal": (0.9 + 0.7) / 3, "person": 0.4 / 3, "vehicle": 0.0}, abs=1e-4
    )


def test_idle_sequences_close_and_state_survives_a_restart() -> None:
    grouper = _grouper()
    grouper.add(T0, [_det("animal", 0.8)])
    assert grouper.close_if_idle(T0 + timedelta(seconds=2)) is None
    restored = _grouper(BurstState.from_json(grouper.state.to_json()))
    restored.add(T0 + timedelta(seconds=1), [])
    summary = restored.close_if_idle(T0 + timedelta(seconds=5))
    assert summary is not None and summary.frame_count == 2
    assert restored.add(T0 + timedelta(seconds=9), [])[0] == "trap-07:seq:000000002"


def _smoothing(lone_min_conf: float = 0.5) -> BurstGrouper:
    return BurstGrouper("trap-07", 3.0, ("animal", "person", "vehicle"), BurstState(), lone_min_conf)


def _burst(grouper: BurstGrouper, frames: list[list[Detection]]) -> SequenceSummary:
    for index, detections in enumerate(frames):
        grouper.add(T0 + timedelta(seconds=index), detections)
    summary = grouper.close()
    assert summary is not None
    return summary


def test_a_lone_low_box_in_a_burst_is_demoted_from_the_summary() -> None:
    # flash glare caught in one frame of three
    summary = _burst(_smoothing(), [[], [_det("animal", 0.31)], []])
    assert summary.categories == {}
    assert summary.frame_count == 3


def test_boxes_seen_twice_or_confidently_or_in_a_single_frame_stay() -> None:
    seen_twice = _burst(_smoothing(), [[_det("animal", 0.3)], [_det("animal", 0.35)], []])
    confident = _burst(_smoothing(), [[], [_det("animal", 0.8)], []])
    single = _burst(_smoothing(), [[_det("animal", 0.3)]])  # nothing to corroborate it with
    mixed = _burst(_smoothing(), [[_det("animal", 0.9)], [_det("animal", 0.9), _det("person", 0.3)]])
    assert "animal" in seen_twice.categories
    assert confident.categories["animal"].best_conf == 0.8
    assert "animal" in single.categories
    assert set(mixed.categories) == {"animal"}


def test_smoothing_off_keeps_everything() -> None:
    assert "animal" in _burst(_smoothing(0.0), [[], [_det("animal", 0.31)], []]).categories


def test_state_saved_before_smoothing_existed_still_loads() -> None:
    old = (
        '{"next_number": 2, "open": {"sequence_id": "trap-07:seq:000000001", "first_at":'
        ' "2026-11-22T03:14:07+00:00", "last_at": "2026-11-22T03:14:07+00:00", "frame_count": 1,'
        ' "max_counts": {"animal": 1}, "best_conf": {"animal": 0.3}, "probability_sums": {"animal": 0.3}}}'
    )
    grouper = BurstGrouper("trap-07", 3.0, ("animal",), BurstState.from_json(old), 0.5)
    grouper.add(T0 + timedelta(seconds=1), [])
    summary = grouper.close()
    assert summary is not None and "animal" in summary.categories  # unknown frame counts: not demoted
