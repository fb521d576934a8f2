from __future__ import annotations

import json

import pytest
from pydantic import TypeAdapter, ValidationError

from trapline.contracts import (
    TOPICS,
    UPLINK_KINDS,
    Detection,
    DetectionMessage,
    parse_payload,
    parse_topic,
    topic,
)

EXAMPLE = {
    "schema": "trapline.detections/1", "id": "trap-07:000001234", "device_id": "trap-07",
    "captured_at": "2026-11-22T03:14:07.120+00:00", "processed_at": "2026-11-22T03:14:07.400+00:00",
    "sequence_id": "trap-07:seq:000000311", "frame_index": 2,
    "image": {"file": "DCIM/100/IMG_0042.JPG", "sha256": "a" * 64, "width": 2048, "height": 1536, "night": True},
    "model": {"name": "trapline-nano", "version": "3", "sha256": "b" * 64},
    "inference_ms": 14.9,
    "detections": [{"category": "animal", "conf": 0.91, "bbox": [0.31, 0.48, 0.31, 0.21]}],
}  # fmt: skip


def _wire(payload: dict[str, object]) -> DetectionMessage:
    message = parse_payload("detections", json.dumps(payload))
    assert isinstance(message, DetectionMessage)
    return message


def test_design_example_round_trips_byte_for_byte_in_meaning() -> None:
    message = _wire(EXAMPLE)
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
        # what would not fit the database: 64-bit and 32-bit overflows, years out of range once in UTC
        {"frame_index": 2**63},
        {"frame_index": 2**31},
        {"image": {**EXAMPLE["image"], "width": 2**31}},  # type: ignore[dict-item]
        {"captured_at": "0001-01-01T00:30:00+01:00"},
        {"processed_at": "9999-12-31T23:30-01:00"},
        {"image": {**EXAMPLE["image"], "file": "IMG\x00.JPG"}},  # type: ignore[dict-item]
        # no coercion: a string is not a number, a float is not an integer
        {"frame_index": 2.0},
        {"detections": [{"category": "animal", "conf": "0.5", "bbox": [0, 0, 0.1, 0.1]}]},
        {"image": {**EXAMPLE["image"], "night": "true"}},  # type: ignore[dict-item]
        # ids belong to the sender and use a safe alphabet (they become file and archive names)
        {"id": "trap-08:000001234"},
        {"sequence_id": "trap-08:seq:1"},
        {"id": "trap-07:../../etc/passwd"},
        {"detections": [{"category": "tree stump", "conf": 0.5, "bbox": [0, 0, 0.1, 0.1]}]},
    ],
)
def test_off_contract_messages_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _wire({**EXAMPLE, **change})


def test_deeply_nested_json_is_refused_without_recursion_error() -> None:
    hostile = '{"detections": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(ValidationError, match="recursion limit"):
        parse_payload("detections", hostile)


def test_heartbeat_floats_must_be_finite() -> None:
    good = {"schema": "trapline.heartbeat/1", "ts": "2026-11-22T03:14:07.120+00:00", "uptime_s": 5.0,
            "frames_processed": 1, "frames_quarantined": 0, "spool_depth": 0, "spool_bytes": 0, "dropped": 0,
            "disk_free_bytes": 2**40, "cpu_temp_c": 51.5}  # fmt: skip
    parse_payload("heartbeat", json.dumps(good))
    for bad in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValidationError):
            parse_payload("heartbeat", json.dumps(good).replace("51.5", bad))


def test_one_table_of_topics_drives_directions() -> None:
    assert set(UPLINK_KINDS) == {"status", "detections", "sequences", "heartbeat", "ota"}
    assert all(TOPICS[kind].writer == "device" for kind in UPLINK_KINDS)
    assert TOPICS["cmd/model"].writer == "server" and TOPICS["cmd/model"].retain
    assert TOPICS["heartbeat"].qos == 0 and TOPICS["status"].retain


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
    message = _wire({**EXAMPLE, "captured_at": "2026-11-22T03:14:07.123456Z"})
    assert json.loads(message.to_json())["captured_at"] == "2026-11-22T03:14:07.123+00:00"


def test_every_control_character_but_tab_and_newline_is_refused() -> None:
    import unicodedata

    from trapline.contracts import Text

    adapter = TypeAdapter(Text)
    for code in range(0x3000):  # Unicode's control characters (Cc) all lie below U+00A0
        char = chr(code)
        refused = unicodedata.category(char) == "Cc" and char not in "\t\n"
        if refused:
            with pytest.raises(ValidationError):
                adapter.validate_python(f"a{char}b")
        else:
            assert adapter.validate_python(f"a{char}b") == f"a{char}b"
