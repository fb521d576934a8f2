"""Which crops exist to cluster, and where each one's pixels come from.

An item is a stored box (`d<detection id>`) at or above the clustering threshold whose frame has an
uploaded picture, or a below-threshold `candidate` crop a trap sent on its own (`m<media id>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.server.clustering.crops import (
    CANDIDATE_KIND,
    CropError,
    cut_square,
    pad_to_square,
    read_rgb,
    square_window,
)
from trapline.server.models import Detection, DetectionFrame, Media
from trapline.server.queries import rows_where_in

PICTURE_KINDS = ("frame", "thumbnail", "crop")


@dataclass(frozen=True)
class CropItem:
    key: str
    detection_id: int | None
    media_id: int | None
    frame_id: str
    device_id: str
    captured_at: datetime
    night: bool
    frame_width: int
    category: str | None
    conf: float | None
    bbox: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class CutCrop:
    pixels: np.ndarray  # 224x224 RGB uint8
    source_kind: str  # frame / thumbnail / crop / candidate
    source_width: int
    source_height: int
    low_resolution: bool  # cut from something smaller than the original frame


def detection_key(detection_id: int) -> str:
    return f"d{detection_id}"


def media_key(media_id: int) -> str:
    return f"m{media_id}"


def eligible_keys(session: Session, min_conf: float, category: str = "animal") -> list[str]:
    """Keys of every crop that can be cut today, oldest first."""
    with_picture = select(Media.detection_id).where(Media.kind.in_(PICTURE_KINDS))
    boxes = session.scalars(
        select(Detection.id)
        .where(Detection.category == category, Detection.conf >= min_conf)
        .where(Detection.frame_id.in_(with_picture))
        .order_by(Detection.id)
    )
    # a candidate whose frame's message has not arrived (or was dropped by a full spool) waits
    candidates = session.scalars(
        select(Media.id)
        .where(Media.kind == CANDIDATE_KIND, Media.detection_id.in_(select(DetectionFrame.id)))
        .order_by(Media.id)
    )
    return [detection_key(i) for i in boxes] + [media_key(i) for i in candidates]


def load_items(session: Session, keys: Sequence[str]) -> list[CropItem]:
    """The items behind `keys` (unknown keys are left out: a box deleted since)."""
    det_ids = [int(k[1:]) for k in keys if k.startswith("d")]
    media_ids = [int(k[1:]) for k in keys if k.startswith("m")]
    found: dict[str, CropItem] = {}
    query = select(Detection, DetectionFrame).join(DetectionFrame, Detection.frame_id == DetectionFrame.id)
    for start in range(0, len(det_ids), 5000):
        for det, frame in session.execute(query.where(Detection.id.in_(det_ids[start : start + 5000]))):
            found[detection_key(det.id)] = CropItem(
                detection_key(det.id), det.id, None, frame.id, frame.device_id, frame.captured_at,
                frame.night, frame.width, det.category, det.conf, (det.x, det.y, det.w, det.h),
            )  # fmt: skip
    for media in rows_where_in(session, select(Media), Media.id, media_ids):  # type: ignore[arg-type]
        owner = session.get(DetectionFrame, media.detection_id) if media.detection_id else None
        if owner is None:
            continue
        frame = owner
        found[media_key(media.id)] = CropItem(
            media_key(media.id), None, media.id, frame.id, frame.device_id, frame.captured_at,
            frame.night, frame.width, None, None, None,
        )  # fmt: skip
    return [found[k] for k in keys if k in found]


class PictureFinder:
    """Cuts items' crops from the media store, reading each picture once per batch."""

    def __init__(self, session: Session, media_dir: Path, items: Sequence[CropItem]) -> None:
        self.media_dir = media_dir
        frame_ids = sorted({i.frame_id for i in items})
        self.pictures: dict[str, dict[str, list[Media]]] = {f: {} for f in frame_ids}
        for media in rows_where_in(session, select(Media).order_by(Media.id), Media.detection_id, frame_ids):
            self.pictures[media.detection_id].setdefault(media.kind, []).append(media)
        self.box_order: dict[str, list[int]] = {f: [] for f in frame_ids}
        for det in rows_where_in(
            session, select(Detection).order_by(Detection.id), Detection.frame_id, frame_ids
        ):
            self.box_order[det.frame_id].append(det.id)
        self.media_by_id = {m.id: m for kinds in self.pictures.values() for ms in kinds.values() for m in ms}
        self._cache: dict[str, np.ndarray] = {}

    def _read(self, media: Media) -> np.ndarray:
        if media.sha256 not in self._cache:
            self._cache[media.sha256] = read_rgb(self.media_dir / media.sha256[:2] / media.sha256)
        return self._cache[media.sha256]

    def cut(self, item: CropItem) -> CutCrop:
        if item.media_id is not None:
            media = self.media_by_id.get(item.media_id)
            if media is None:
                raise CropError(f"candidate picture {item.media_id} is gone")
            image = self._read(media)
            h, w = image.shape[:2]
            return CutCrop(pad_to_square(image), CANDIDATE_KIND, w, h, True)
        if item.bbox is None or item.detection_id is None:
            raise CropError(f"item {item.key} has no box")
        kinds = self.pictures.get(item.frame_id, {})
        for kind in ("frame", "thumbnail"):
            if kind in kinds:
                image = self._read(kinds[kind][0])
                h, w = image.shape[:2]
                pixels = cut_square(image, square_window(item.bbox, w, h))
                return CutCrop(pixels, kind, w, h, w < item.frame_width)
        crops, order = kinds.get("crop", []), self.box_order.get(item.frame_id, [])
        # a trap sends one crop per box, in box order: usable only when none was skipped
        if crops and len(crops) == len(order):
            image = self._read(crops[order.index(item.detection_id)])
            h, w = image.shape[:2]
            return CutCrop(pad_to_square(image), "crop", w, h, False)
        raise CropError(f"frame {item.frame_id} has no uploaded picture to cut box {item.detection_id} from")
