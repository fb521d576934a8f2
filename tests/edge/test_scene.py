"""Tamper and drift on real photos: the same scene passes; a shifted, turned, covered or swapped
camera is reported. (Measured on all the development photos in the README.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import CAMTRAP, SAMPLES, needs_shared
from trapline.contracts import Heartbeat, ViewCheck, parse_payload, utc_now
from trapline.edge.imaging import decode_image
from trapline.edge.scene import SceneReference

DAY = [
    SAMPLES / "buow-RCNX0242.jpg",
    SAMPLES / "coyote-51472-810-empty.jpg",
    SAMPLES / "peru-EK000067-39523-0.jpg",
]


def _load(path: Path) -> np.ndarray:
    image = decode_image(path.read_bytes(), 10**8)  # the check works on 320 px: keep the test light
    return cv2.resize(
        image, (1024, round(image.shape[0] * 1024 / image.shape[1])), interpolation=cv2.INTER_AREA
    )


def _shift(image, fx, fy=0.0):
    h, w = image.shape[:2]
    return cv2.warpAffine(
        image,
        np.array([[1, 0, fx * w], [0, 1, fy * h]], dtype=np.float32),
        (w, h),
        borderMode=cv2.BORDER_REFLECT,
    )


def _turn(image, degrees):
    h, w = image.shape[:2]
    return cv2.warpAffine(
        image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT
    )


def _leaf(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    out = image.copy()
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.6), int(h * 0.6)), 0, 0, 360, 255, -1)
    out[mask > 0] = (cv2.GaussianBlur(image, (0, 0), 40)[mask > 0] * 0.35).astype(np.uint8)
    return out


def _relit(image):
    brighter = cv2.convertScaleAbs(image, alpha=0.7, beta=40)
    return cv2.imdecode(cv2.imencode(".jpg", brighter, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)


@pytest.mark.parametrize("path", DAY, ids=lambda p: p.stem)
def test_views(path: Path) -> None:
    image = _load(path)
    reference = SceneReference(image)
    assert reference.compare(_relit(image)).state == "ok"
    assert reference.compare(_shift(image, 0.10)).state == "shifted"
    assert reference.compare(_turn(image, 5)).state == "shifted"
    assert reference.compare(_leaf(image)).state == "blocked"
    other = next(p for p in DAY if p != path)
    assert reference.compare(_load(other)).state != "ok"


def test_the_same_camera_minutes_later_is_ok() -> None:
    """Real frames of one camera (a video, an animal walking through): not tampered."""
    folder = needs_shared(CAMTRAP) / "images" / "video-frames"
    frames = [_load(folder / f"African forest 2-9-2021_cougar-39858-{n}.jpg") for n in (0, 100, 200)]
    reference = SceneReference(frames[0])
    for frame in frames[1:]:
        result = reference.compare(frame)
        assert result.state == "ok", result


def test_heartbeat_carries_the_view_only_once_checked() -> None:
    beat = Heartbeat(ts=utc_now(), uptime_s=1.0, frames_processed=1, frames_quarantined=0,
                     spool_depth=0, spool_bytes=0, dropped=0)  # fmt: skip
    assert b'"view"' not in beat.to_json()  # older servers still read it
    view = ViewCheck(state="shifted", features_in_place=0.02, detail=0.9, checked_at=utc_now())
    checked = beat.model_copy(update={"view": view})
    assert parse_payload("heartbeat", checked.to_json()).view.state == "shifted"
    assert parse_payload("heartbeat", beat.to_json()).view is None
