"""Pictures the server needs: a thumbnail of a frame, and crops of its detections (clustering)."""

from __future__ import annotations

import cv2
import numpy as np

from trapline.contracts import Detection


def _jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode a JPEG")
    return bytes(data.tobytes())


def thumbnail(image: np.ndarray, longest_side: int) -> bytes:
    height, width = image.shape[:2]
    scale = min(1.0, longest_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return _jpeg(image)


def crops(image: np.ndarray, detections: list[Detection], margin: float) -> list[bytes]:
    """One JPEG per box, with `margin` (share of the box size) of context around it."""
    height, width = image.shape[:2]
    out = []
    for det in detections:
        x, y, w, h = det.bbox
        x0 = max(0, round((x - w * margin) * width))
        y0 = max(0, round((y - h * margin) * height))
        x1 = min(width, round((x + w * (1 + margin)) * width))
        y1 = min(height, round((y + h * (1 + margin)) * height))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            out.append(_jpeg(image[y0:y1, x0:x1]))
    return out
