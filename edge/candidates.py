"""A small sample of what the model nearly reported, so reviewers can find the animals it missed.

Per UTC capture day the trap keeps a uniform random sample (reservoir sampling, Algorithm R) of at
most `per_day` boxes the model scored between `floor` and its threshold, within `max_bytes`: each a
square crop around the box (side = the box's longer side, as the server cuts its crops), at most
`side_px` wide. Boxes that overlap a reported detection, or a remembered static false positive, are
not candidates. The sample lives in `<spool folder>/candidates/` and in the spool's state, so a
restart keeps it; once the day is over (a frame of another day arrives, or the source ends) it moves
to the upload queue as media kind `candidate`, which the uploader sends after every regular
picture and drops first when the queue is full. The server clusters them with the other crops.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from datetime import datetime

import cv2
import numpy as np

from trapline.contracts import Detection
from trapline.edge.config import CandidateConfig
from trapline.edge.ignore_regions import iou
from trapline.edge.spool import LOW_PRIORITY_UPLOAD, DetectionSpool, PendingUpload
from trapline.files import atomic_write

log = logging.getLogger(__name__)

KIND = LOW_PRIORITY_UPLOAD  # media kind "candidate"
_STATE_KEY = "candidates"
# a weaker box this much over a reported one is the same thing, not a missed animal
_SAME_THING_IOU = 0.3


@dataclass(frozen=True)
class KeptCrop:
    detection_id: str  # the message id of the frame the box is in
    file: str
    bytes: int


def reservoir_slot(seen: int, capacity: int, rng: random.Random) -> int | None:
    """Algorithm R: where the `seen`-th item of a stream (1-based) goes in a sample of `capacity`,
    or None to leave it out. Every item ends up in the sample with probability capacity / seen."""
    if seen <= capacity:
        return seen - 1
    slot = rng.randrange(seen)
    return slot if slot < capacity else None


def square_crop(image_bgr: np.ndarray, bbox: tuple[float, float, float, float], side_px: int) -> np.ndarray:
    """The square around a normalised [x, y, w, h] box (side = its longer side, moved inside the
    picture, at most the picture's shorter side), scaled down to at most side_px."""
    height, width = image_bgr.shape[:2]
    x, y, w, h = bbox
    side = int(min(max(round(max(w * width, h * height)), 2), width, height))
    left = min(max(round((x + w / 2) * width - side / 2), 0), width - side)
    top = min(max(round((y + h / 2) * height - side / 2), 0), height - side)
    crop = image_bgr[top : top + side, left : left + side]
    if side > side_px:
        crop = cv2.resize(crop, (side_px, side_px), interpolation=cv2.INTER_AREA)
    return crop


class CandidateSampler:
    def __init__(
        self, config: CandidateConfig, spool: DetectionSpool, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.spool = spool
        self.folder = spool.path.parent / "candidates"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rng = rng or random.Random()  # noqa: S311 - sampling, not security
        state = json.loads(spool.get_state(_STATE_KEY) or "{}")
        self.day: str | None = state.get("day")
        self.seen = int(state.get("seen", 0))
        self.kept = [KeptCrop(**k) for k in state.get("kept", []) if (self.folder / k["file"]).is_file()]
        known = {k.file for k in self.kept}
        for path in self.folder.iterdir():  # written, then the trap stopped before the state was saved
            if path.is_file() and path.name not in known:
                path.unlink(missing_ok=True)
        self.queued = 0  # crops moved to the upload queue by this process

    def _state(self) -> dict[str, str]:
        kept = [asdict(k) for k in self.kept]
        return {_STATE_KEY: json.dumps({"day": self.day, "seen": self.seen, "kept": kept})}

    @property
    def kept_bytes(self) -> int:
        return sum(k.bytes for k in self.kept)

    def offer(
        self,
        detection_id: str,
        captured_at: datetime,
        image_bgr: np.ndarray,
        below: list[Detection],
        reported: list[Detection],
    ) -> bool:
        """Consider a frame's below-threshold boxes (the frame is already spooled). True when the
        previous day's sample was just queued for upload."""
        day = captured_at.date().isoformat()
        flushed = False
        if day != self.day:
            flushed = self.flush()
            self.day, self.seen = day, 0
        replaced_files: list[str] = []
        for det in below:
            if det.category not in self.config.categories or det.conf < self.config.floor:
                continue
            if any(iou(det.bbox, r.bbox) >= _SAME_THING_IOU for r in reported):
                continue
            self.seen += 1
            slot = reservoir_slot(self.seen, self.config.per_day, self.rng)
            if slot is None:
                continue
            slot = min(slot, len(self.kept))  # a box refused by the byte cap left the sample short
            ok, jpeg = cv2.imencode(
                ".jpg", square_crop(image_bgr, det.bbox, self.config.side_px), [cv2.IMWRITE_JPEG_QUALITY, 85]
            )
            data = jpeg.tobytes() if ok else b""
            replaced = self.kept[slot] if slot < len(self.kept) else None
            freed = replaced.bytes if replaced else 0
            if not data or self.kept_bytes - freed + len(data) > self.config.max_bytes:
                continue  # over the day's byte cap: this box is seen, not kept
            name = f"{detection_id.replace(':', '_')}-{self.seen}.jpg"
            atomic_write(self.folder / name, data)
            crop = KeptCrop(detection_id, name, len(data))
            if replaced is None:
                self.kept.append(crop)
            else:
                self.kept[slot] = crop
                replaced_files.append(replaced.file)
        if below:
            self.spool.set_state(self._state())  # one write per frame
        for name in replaced_files:  # only once the saved state no longer names them
            (self.folder / name).unlink(missing_ok=True)
        return flushed

    def flush(self) -> bool:
        """Queue the sample for upload and start an empty one; True when something was queued."""
        if not self.kept:
            return False
        uploads = []
        self.spool.uploads_dir.mkdir(parents=True, exist_ok=True)
        for crop in self.kept:
            target = self.spool.uploads_dir / f"{KIND}-{crop.file}"
            # a crash after this and before the queue commit: the picture is an orphan, removed at
            # the next start (a sample lost, never a half-queued one)
            os.replace(self.folder / crop.file, target)
            uploads.append(PendingUpload(crop.detection_id, KIND, target, crop.bytes))
        count = len(self.kept)
        self.kept = []
        self.spool.put([], state=self._state(), uploads=uploads)
        self.queued += count
        log.info("queued %d below-threshold candidate crop(s) of %s for upload", count, self.day)
        return True
