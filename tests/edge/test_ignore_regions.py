"""The trap's memory of static false positives: same place and look is demoted, an animal in front
of it is kept, a bad command changes nothing, the memory survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import SAMPLES
from trapline.contracts import Detection, IgnoreRegion, IgnoreRegionsCommand
from trapline.edge.ignore_regions import IgnoreRegionMemory, look_signature


def test_repeat_is_demoted_and_a_different_look_is_kept(tmp_path: Path) -> None:
    image = cv2.imread(str(SAMPLES / "coyote-51472-810-empty.jpg"))
    assert image is not None
    stump = (0.1, 0.5, 0.2, 0.3)
    command = IgnoreRegionsCommand(
        ts=datetime.now(UTC),
        regions=[
            IgnoreRegion(bbox=stump, signature=look_signature(image, stump), source="trap-07:000000001")
        ],
    )
    memory = IgnoreRegionMemory(tmp_path / "ignore-regions.json")
    memory.handle(command.to_json())
    same = Detection(category="animal", conf=0.9, bbox=(0.11, 0.51, 0.2, 0.3))
    elsewhere = Detection(category="animal", conf=0.9, bbox=(0.6, 0.1, 0.2, 0.3))
    kept, demoted = memory.apply(image, [same, elsewhere])
    assert demoted == [same] and kept == [elsewhere]
    changed = image.copy()
    x0, y0 = int(0.1 * image.shape[1]), int(0.5 * image.shape[0])
    rng = np.random.default_rng(0)
    changed[y0 : y0 + int(0.3 * image.shape[0]), x0 : x0 + int(0.2 * image.shape[1])] = rng.integers(
        0, 255, (int(0.3 * image.shape[0]), int(0.2 * image.shape[1]), 3), dtype=np.uint8
    )  # something else stands there now
    assert memory.apply(changed, [same]) == ([same], [])
    restarted = IgnoreRegionMemory(tmp_path / "ignore-regions.json")
    assert restarted.apply(image, [same])[1] == [same]
    restarted.handle(b'{"schema": "trapline.ignore-regions/1", "regions": "nonsense"}')
    assert restarted.command is not None and restarted.command.regions == command.regions
