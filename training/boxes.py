"""Box conventions and exact conversions between them.

- MegaDetector / Trapline wire: [x_min, y_min, width, height], normalised 0-1, top-left origin.
- YOLO txt: [x_centre, y_centre, width, height], normalised 0-1.
- Pascal VOC: [xmin, ymin, xmax, ymax] in pixels (1-based in VOC files; we write 0-based floats
  rounded to whole pixels, as most tools do).
- COCO: [x_min, y_min, width, height] in pixels.
"""

from __future__ import annotations

Box4 = tuple[float, float, float, float]


def md_to_yolo(box: Box4) -> Box4:
    x, y, w, h = box
    return (x + w / 2, y + h / 2, w, h)


def yolo_to_md(box: Box4) -> Box4:
    cx, cy, w, h = box
    return (cx - w / 2, cy - h / 2, w, h)


def md_to_voc(box: Box4, width: int, height: int) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (round(x * width), round(y * height), round((x + w) * width), round((y + h) * height))


def voc_to_md(box: tuple[float, float, float, float], width: int, height: int) -> Box4:
    x1, y1, x2, y2 = box
    return (x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height)


def coco_to_md(box: Box4, width: int, height: int) -> Box4:
    x, y, w, h = box
    return (x / width, y / height, w / width, h / height)


def clip_md(box: Box4) -> Box4:
    """Clip to the frame (labels from detectors can poke out by a pixel)."""
    x, y, w, h = box
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    return (x0, y0, x1 - x0, y1 - y0)


def md_iou(a: Box4, b: Box4) -> float:
    """Intersection over union of two MegaDetector-convention boxes."""
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    iw = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0
