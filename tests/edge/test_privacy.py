"""A site that blurs people: no pixel of a person box leaves the trap as captured."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES
from trapline.contracts import Detection
from trapline.edge.agent import Agent
from trapline.edge.config import AgentConfig
from trapline.edge.imaging import decode_image
from trapline.edge.pictures import blur_boxes
from trapline.edge.sources import Frame

PHOTO = SAMPLES / "coyote-51472-0.jpg"
PERSON = Detection(category="person", conf=0.9, bbox=(0.40, 0.30, 0.20, 0.45))
ANIMAL = Detection(category="animal", conf=0.9, bbox=(0.05, 0.50, 0.25, 0.30))


def _agent(tmp_path: Path, mode: str, blur: bool) -> Agent:
    return Agent(AgentConfig.model_validate({
        "device_id": "trap-07",
        "source": {"type": "replay", "files": [str(PHOTO)], "count": 1},
        "upload": {"url": "http://127.0.0.1:9", "mode": mode},
        "privacy": {"blur_people": blur},
        "spool": {"path": str(tmp_path / mode / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "q"),
    }))  # fmt: skip


def _box(det: Detection, width: int, height: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    x, y, w, h = det.bbox
    return (
        max(0, round((x - w * margin) * width)), max(0, round((y - h * margin) * height)),
        min(width, round((x + w * (1 + margin)) * width)), min(height, round((y + h * (1 + margin)) * height)),
    )  # fmt: skip


@pytest.mark.parametrize("blur", [True, False])
def test_no_uploaded_pixel_of_a_person_box_equals_the_original(tmp_path: Path, blur: bool) -> None:
    data = PHOTO.read_bytes()
    original = decode_image(data, 10**8)
    height, width = original.shape[:2]
    px0, py0, px1, py1 = _box(PERSON, width, height)
    for mode in ("frames", "crops"):
        agent = _agent(tmp_path, mode, blur)
        try:
            # as the agent hands it over: decoded for the model (maybe reduced), full size on demand
            decoded = agent.decoder.decode(Frame("k", PHOTO.name, datetime.now(UTC), data=data))
            pictures = agent._pictures("trap-07:000000001", decoded, [PERSON, ANIMAL])
            uploads = {
                p.kind + str(i): decode_image(p.path.read_bytes(), 10**8) for i, p in enumerate(pictures)
            }
        finally:
            agent.spool.close()
        if mode == "frames":
            frame = next(v for k, v in uploads.items() if k.startswith("frame"))
            region, seen = original[py0:py1, px0:px1], frame[py0:py1, px0:px1]
        else:  # the person's own crop: its box sits inside the crop's margin
            cx0, cy0, _, _ = _box(PERSON, width, height, margin=0.15)
            crop = uploads["crop0"]
            region = original[py0:py1, px0:px1]
            seen = crop[py0 - cy0 : py1 - cy0, px0 - cx0 : px1 - cx0]
        equal = np.all(seen == region, axis=-1)
        if blur:
            assert not equal.any(), f"{mode}: {int(equal.sum())} pixels of the person box came through"
        else:  # the test can fail: without the rule, the person's pixels do come through
            assert np.abs(seen.astype(int) - region).mean() < 8


def test_blur_leaves_animals_and_the_rest_alone() -> None:
    image = decode_image(PHOTO.read_bytes(), 10**8)
    covered = blur_boxes(image, [PERSON, ANIMAL])
    height, width = image.shape[:2]
    x0, y0, x1, y1 = _box(PERSON, width, height)
    changed = np.any(covered != image, axis=-1)
    assert changed[y0:y1, x0:x1].all()
    changed[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = False  # the cover rounds outwards
    assert not changed.any()  # the animal and the background are untouched
