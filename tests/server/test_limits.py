"""Whatever the contract accepts, the database stores: no batch may fail on a too-long field."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from trapline.contracts import (
    CATEGORIES,
    CATEGORY_MAX,
    FILE_MAX,
    ID_MAX,
    MODEL_NAME_MAX,
    REASON_MAX,
    VERSION_MAX,
)
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch
from trapline.server.ingest.validate import Accepted, Rejected, validate
from trapline.server.models import Detection, DetectionFrame, Device, DeviceModelStatus

DEVICE = "t" * 64  # the longest device id the topic pattern allows


def _model(extra: int = 0) -> dict[str, str]:
    return {"name": "n" * (MODEL_NAME_MAX + extra), "version": "v" * VERSION_MAX, "sha256": "c" * 64}


def _messages(extra: int = 0) -> dict[str, dict[str, Any]]:
    when = "2026-11-22T03:00:00.000+00:00"
    classes = {chr(ord("a") + i) * CATEGORY_MAX: 0.5 for i in range(20)}  # many long class names
    return {
        "detections": {
            "schema": "trapline.detections/1", "id": f"{DEVICE}:" + "9" * (ID_MAX - len(DEVICE) - 1),
            "device_id": DEVICE, "captured_at": when, "processed_at": when,
            "sequence_id": f"{DEVICE}:" + "s" * (ID_MAX - len(DEVICE) - 1), "frame_index": 0,
            "image": {"file": "f" * FILE_MAX, "sha256": "a" * 64, "width": 1, "height": 1, "night": True},
            "model": _model(extra), "inference_ms": 1.0,
            "detections": [{"category": CATEGORIES[i % 3], "conf": 0.5, "bbox": [0, 0, 1, 1]} for i in range(20)],
        },
        "sequences": {
            "schema": "trapline.sequences/1", "sequence_id": f"{DEVICE}:" + "s" * (ID_MAX - len(DEVICE) - 1),
            "device_id": DEVICE, "first_frame_at": when, "last_frame_at": when, "frame_count": 1,
            "categories": {"animal": {"max_count": 7, "best_conf": 0.5}}, "mean_class_probabilities": classes,
        },
        "status": {"state": "online", "ts": when, "agent_version": "0" * VERSION_MAX, "model": _model()},
        "ota": {"ts": when, "version": "1" * VERSION_MAX, "stage": "failed", "reason": "r" * REASON_MAX},
    }  # fmt: skip


def test_the_longest_valid_messages_store_on_every_database(database_url: str, sessions_for: Any) -> None:
    sessions = sessions_for(database_url)
    with transaction(sessions) as session:
        session.add(Device(id=DEVICE, state="unknown"))
    accepted = [
        validate("trapline", f"trapline/{DEVICE}/{kind}", json.dumps(body).encode(), 10**6)
        for kind, body in _messages().items()
    ]
    assert all(isinstance(a, Accepted) for a in accepted), accepted
    with transaction(sessions) as session:
        result = store_batch(session, accepted, [])  # type: ignore[arg-type]
    assert result.new_frames == 1
    with sessions() as session:
        assert session.scalar(select(DetectionFrame.model_name)) == "n" * MODEL_NAME_MAX
        assert len(list(session.scalars(select(Detection)))) == 20
        assert session.scalar(select(DeviceModelStatus.reason)) == "r" * REASON_MAX
        assert session.scalar(select(Device.agent_version)) == "0" * VERSION_MAX


def test_one_character_too_many_is_refused_at_the_door() -> None:
    body = _messages(extra=1)["detections"]
    verdict = validate("trapline", f"trapline/{DEVICE}/detections", json.dumps(body).encode(), 10**6)
    assert isinstance(verdict, Rejected)
    assert "model.name" in verdict.reason
