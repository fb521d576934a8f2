"""The trap's memory of its own static false positives: a stump or bush a reviewer marked "not an
animal" on the server, sent back as `cmd/ignore-regions` (retained).

A new detection is demoted (left out of the published message and counted) when it overlaps a
remembered region (IoU >= the command's `min_iou`) and looks like it: the normalised
cross-correlation of 16x16 greyscale versions of the two boxes reaches `min_similarity`. An animal
standing in front of the stump looks different and is kept. The server computes the signatures with
the same function (`look_signature`) from the pictures it has.

Commands reach the agent through one registration point: `Agent.command_handlers` maps the topic
kind to `IgnoreRegionMemory.handle`. The memory is kept in a file (written atomically) so a reboot
in the forest does not forget it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from pydantic import ValidationError

from trapline.contracts import LOOK_SIDE, Detection, IgnoreRegionsCommand, parse_payload
from trapline.files import atomic_write

log = logging.getLogger(__name__)


def look_signature(image_bgr: np.ndarray, bbox: tuple[float, float, float, float]) -> str:
    """The box's pixels as 16x16 greyscale bytes, hex-encoded (the contract's LookSignature)."""
    height, width = image_bgr.shape[:2]
    x, y, w, h = bbox
    x0, y0 = int(max(0, min(width - 1, round(x * width)))), int(max(0, min(height - 1, round(y * height))))
    x1 = int(max(x0 + 1, min(width, round((x + w) * width))))
    y1 = int(max(y0 + 1, min(height, round((y + h) * height))))
    patch = image_bgr[y0:y1, x0:x1]
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    small = cv2.resize(grey, (LOOK_SIDE, LOOK_SIDE), interpolation=cv2.INTER_AREA)
    return bytes(small.astype(np.uint8).tobytes()).hex()


def similarity(a: str, b: str) -> float:
    """Normalised cross-correlation of two signatures, -1..1 (1: the same look; brightness and
    contrast changes, e.g. day vs dusk, do not count)."""
    va = np.frombuffer(bytes.fromhex(a), np.uint8).astype(np.float32)
    vb = np.frombuffer(bytes.fromhex(b), np.uint8).astype(np.float32)
    va, vb = va - va.mean(), vb - vb.mean()
    denominator = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / denominator) if denominator > 1e-6 else 0.0


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class IgnoreRegionMemory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.command: IgnoreRegionsCommand | None = None
        self.demoted = 0
        if path.exists():
            try:
                self.command = parse_payload("cmd/ignore-regions", path.read_bytes())
            except (ValidationError, OSError) as exc:
                log.error("ignoring the stored ignore-regions memory %s: %s", path, exc)

    def handle(self, payload: bytes) -> None:
        """A `cmd/ignore-regions` message: validate, replace the memory, keep it on disk. A bad
        command is logged and changes nothing."""
        try:
            command = parse_payload("cmd/ignore-regions", payload)
        except ValidationError as exc:
            log.error("refusing an ignore-regions command: %s", str(exc)[:300])
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, payload)
        self.command = command
        log.info("ignore-regions memory now holds %d region(s)", len(command.regions))

    def apply(
        self, image_bgr: np.ndarray, detections: list[Detection], count: bool = True
    ) -> tuple[list[Detection], list[Detection]]:
        """(kept, demoted): detections matching a remembered region are demoted (and counted in
        `demoted` unless `count` is False: boxes that were never going to be reported)."""
        command = self.command
        if command is None or not command.regions or not detections:
            return detections, []
        kept, demoted = [], []
        for det in detections:
            near = [r for r in command.regions if iou(det.bbox, r.bbox) >= command.min_iou]
            if near:
                look = look_signature(image_bgr, det.bbox)
                if any(similarity(look, r.signature) >= command.min_similarity for r in near):
                    demoted.append(det)
                    continue
            kept.append(det)
        self.demoted += len(demoted) if count else 0
        return kept, demoted
