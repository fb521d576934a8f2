"""Pictures the server needs: a thumbnail of a frame, and crops of its detections (clustering)."""

from __future__ import annotations

import cv2
import numpy as np

from trapline.contracts import Category, Detection


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode a JPEG")
    return bytes(data.tobytes())


def thumbnail(image: np.ndarray, longest_side: int) -> bytes:
    height, width = image.shape[:2]
    scale = min(1.0, longest_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return encode_jpeg(image)


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
            out.append(encode_jpeg(image[y0:y1, x0:x1]))
    return out


def _box_pixels(det: Detection, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels a box covers, rounded outwards (a privacy blur must not miss an edge row)."""
    x, y, w, h = det.bbox
    x0, y0 = max(0, int(np.floor(x * width))), max(0, int(np.floor(y * height)))
    x1, y1 = min(width, int(np.ceil((x + w) * width))), min(height, int(np.ceil((y + h) * height)))
    return x0, y0, x1, y1


# flat colours a covered box may take: the one farthest from every pixel it hides is used
_FILL_COLOURS = np.array([(b, g, r) for b in (0, 128, 255) for g in (0, 128, 255) for r in (0, 128, 255)])


def _farthest_colour(region: np.ndarray) -> np.ndarray:
    pixels = region.reshape(-1, region.shape[-1]).astype(np.int16)
    candidates = _FILL_COLOURS[:, : pixels.shape[1]].astype(np.int16)
    # Chebyshev distance from each candidate to its nearest pixel; keep the candidate farthest away
    nearest = [int(np.abs(pixels - c).max(axis=1).min()) for c in candidates]
    colour: np.ndarray = candidates[int(np.argmax(nearest))].astype(region.dtype)
    return colour


def blur_boxes(
    image: np.ndarray, detections: list[Detection], categories: tuple[Category, ...] = ("person",)
) -> np.ndarray:
    """A copy of `image` in which every box of `categories` is covered (the site's privacy rule).

    A blur can be undone in part and leaves flat areas as they were; a flat fill in the colour
    farthest from every pixel it hides leaves nothing of the person, and no pixel of the box can
    come back equal to the original even after JPEG compression (tested on real photos)."""
    out = image.copy()
    if out.ndim == 2:
        out = out[:, :, None]
    height, width = out.shape[:2]
    for det in detections:
        if det.category not in categories:
            continue
        x0, y0, x1, y1 = _box_pixels(det, width, height)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = _farthest_colour(out[y0:y1, x0:x1])
    return out.reshape(image.shape)
