"""MegaDetector batch output (format 1.4) of the fleet's detections, for tools that read it
(Timelapse, the MegaDetector postprocessing scripts, and our own `trapline train prepare`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from trapline.contracts import MEGADETECTOR_CATEGORIES
from trapline.server.models import DetectionFrame
from trapline.server.queries import boxes_by_frame, frames_in

_IDS = {name: key for key, name in MEGADETECTOR_CATEGORIES.items()}


def build(session: Session, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    frames: list[DetectionFrame] = list(session.scalars(frames_in(since, until)))
    boxes = boxes_by_frame(session, [f.id for f in frames])
    images = []
    for frame in frames:
        dets: list[dict[str, Any]] = [
            {
                "category": _IDS[d.category],
                "conf": round(d.conf, 4),
                "bbox": [round(v, 4) for v in (d.x, d.y, d.w, d.h)],
            }
            for d in boxes.get(frame.id, [])
            if d.category in _IDS
        ]
        images.append(
            {
                "file": f"{frame.device_id}/{frame.image_file}",
                "datetime": frame.captured_at.isoformat(),
                "detections": dets,
                "max_detection_conf": max((float(d["conf"]) for d in dets), default=0.0),
            }
        )
    detectors = sorted({f"{f.model_name} v{f.model_version}" for f in frames})
    return {
        "info": {"format_version": "1.4", "detector": ", ".join(detectors) or "none"},
        "detection_categories": dict(MEGADETECTOR_CATEGORIES),
        "images": images,
    }
