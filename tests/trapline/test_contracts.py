from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from trapline.contracts import Detection, DetectionMessage, parse_topic, topic

EXAMPLE = {
    "schema": "trapline.detections/1", "id": "trap-07:000001234", "device_id": "trap-07",
    "captured_at": "2026-11-22T03:14:07.120+00:00", "processed_at": "2026-11-22T03:14:07.400+00:00",
    "sequence_id": "trap-07:seq:000000311", "frame_index": 2,
    "image": {"file": "DCIM/100/IMG_0042.JPG", "sha256": "a" * 64, "width": 2048, "height": 1536, "night": True},
    "model": {"name": "trapline-nano", "version": "3", "sha256": "b" * 64},
    "inference_ms": 14.9,
    "detections": [{"category": "animal", "conf": 0.91, "bbox": [0.31, 0.48, 0.31, 0.21]}],
}  # fmt: skip


def test_design_example_round_trips_byte_for_byte_in_meaning() -> None:
    message = DetectionMessage.model_validate(EXAMPLE)
    assert json.loads(message.to_json()) == EXAMPLE


@pytest.mark.parametrize(
    "change",
    [
        {"schema": "trapline.detections/2"},
        {"captured_at": "2026-11-22T03:14:07"},  # no timezone
        {"device_id": "trap/07"},
        {"unexpected": 1},
        {"detections": [{"category": "animal", "conf": 1.5, "bbox": [0, 0, 0.1, 0.1]}]},
        {"detections": [{"category": "animal", "conf": 0.5, "bbox": [0.8, 0, 0.3, 0.1]}]},
    ],
)
def test_off_contract_messages_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DetectionMessage.model_validate({**EXAMPLE, **change})


def test_topics_build_and_parse() -> None:
    assert topic("trapline", "trap-07", "cmd/model") == "trapline/trap-07/cmd/model"
    assert parse_topic("trapline", "trapline/trap-07/detections") == ("trap-07", "detections")
    assert parse_topic("trapline", "trapline/trap-07/detections/extra") is None
    assert parse_topic("trapline", "other/trap-07/detections") is None
    with pytest.raises(ValueError, match="invalid device id"):
        topic("trapline", "+", "status")


def test_bbox_may_touch_the_frame_edge_but_not_cross_it() -> None:
    assert Detection(category="animal", conf=0.5, bbox=(0.5, 0.5, 0.5, 0.5)).bbox == (0.5, 0.5, 0.5, 0.5)
    Detection(category="animal", conf=0.5, bbox=(0.6, 0.0, 0.4 + 5e-7, 0.1))  # float rounding: allowed
    with pytest.raises(ValidationError, match="outside the frame"):
        Detection(category="animal", conf=0.5, bbox=(0.6, 0.0, 0.4 + 1e-4, 0.1))


def test_timestamps_go_out_with_milliseconds_and_an_offset() -> None:
    message = DetectionMessage.model_validate({**EXAMPLE, "captured_at": "2026-11-22T03:14:07.123456Z"})
    assert json.loads(message.to_json())["captured_at"] == "2026-11-22T03:14:07.123+00:00"
