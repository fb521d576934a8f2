"""Square crops of boxes, as the Yasuní clustering study cut them.

A crop is a square centred on the box whose side is the box's longer side, moved inside the picture
where it fits (clamped) and padded with the ImageNet mean colour where it cannot, then resized to
224x224. It is cut from the best picture the trap uploaded for the frame: the original frame when
there is one; a thumbnail (the whole frame, scaled down) otherwise, which is then flagged as
lower-resolution in the report; a trap's own crop (box plus margin) as a last resort; a
below-threshold `candidate` crop is already the square and is only resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trapline.contracts import MediaKind

CROP_SIZE = 224
# pixels outside the picture: the ImageNet mean, so padding normalises to zero
PAD_RGB = (124, 116, 104)
# the order pictures are preferred in: full resolution first
SOURCE_KINDS: tuple[MediaKind, ...] = ("frame", "thumbnail", "crop")
CANDIDATE_KIND: MediaKind = "candidate"


class CropError(ValueError):
    """The picture cannot give this crop (missing, unreadable, empty box); recorded as data."""


@dataclass(frozen=True)
class Window:
    """A square in picture pixels; it may reach outside the picture (then padded)."""

    left: int
    top: int
    side: int


def square_window(bbox: tuple[float, float, float, float], width: int, height: int) -> Window:
    """The square around a normalised [x, y, w, h] box: side = the box's longer side, centred on
    the box, shifted inside the picture where it fits, centred on the picture where it cannot."""
    x, y, w, h = bbox
    side = max(2, round(max(w * width, h * height)))
    cx, cy = (x + w / 2) * width, (y + h / 2) * height

    def place(centre: float, extent: int) -> int:
        start = round(centre - side / 2)
        if side <= extent:
            return min(max(start, 0), extent - side)
        return round((extent - side) / 2)  # larger than the picture: pad evenly

    return Window(place(cx, width), place(cy, height), side)


def cut_square(image_rgb: np.ndarray, window: Window, size: int = CROP_SIZE) -> np.ndarray:
    """The window's pixels (padded outside the picture), resized to size x size, RGB uint8."""
    height, width = image_rgb.shape[:2]
    x0, y0, x1, y1 = window.left, window.top, window.left + window.side, window.top + window.side
    inside = image_rgb[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if inside.size == 0:
        raise CropError(f"box window {window} lies outside the {width}x{height} picture")
    if (x0, y0, x1, y1) != (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)):
        inside = cv2.copyMakeBorder(
            inside,
            max(-y0, 0),
            max(y1 - height, 0),
            max(-x0, 0),
            max(x1 - width, 0),
            cv2.BORDER_CONSTANT,
            value=PAD_RGB,
        )
    interpolation = cv2.INTER_AREA if window.side > size else cv2.INTER_LINEAR
    return cv2.resize(inside, (size, size), interpolation=interpolation)


def pad_to_square(image_rgb: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """A picture that is already a crop: padded to a square around its centre, then resized."""
    height, width = image_rgb.shape[:2]
    return cut_square(image_rgb, square_window((0.0, 0.0, 1.0, 1.0), width, height), size)


def read_rgb(path: Path) -> np.ndarray:
    """Decode an uploaded picture (JPEG or PNG) as RGB."""
    data = np.fromfile(path, dtype=np.uint8) if path.exists() else None
    if data is None or data.size == 0:
        raise CropError(f"picture {path.name} is missing from the media store")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise CropError(f"picture {path.name} cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_greyscale(crop_rgb: np.ndarray) -> np.ndarray:
    """The illumination-invariant input: the same crop in grey, repeated on three channels (night
    IR frames are grey already; colour casts and day colours stop splitting clusters)."""
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[:, :, None], 3, axis=2)
