"""Frames from a live camera: keep the JPEG bytes (for hashing and upload) next to the pixels."""

from __future__ import annotations

from datetime import datetime

import cv2
import numpy as np

from trapline.edge.sources.base import Frame


def encoded_frame(prefix: str, image: np.ndarray, captured_at: datetime, quality: int) -> Frame:
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the camera frame as JPEG")
    stamp = captured_at.strftime("%Y%m%dT%H%M%S%f")
    return Frame(
        key=f"{prefix}:{stamp}",
        name=f"{prefix}/{stamp}.jpg",
        captured_at=captured_at,
        data=jpeg.tobytes(),
        image=image,
    )
