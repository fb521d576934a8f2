"""The self-test a new model passes before it may replace the running one: the bundle's reference
frames must give the detections recorded when the bundle was built, within tolerances (runtimes and
CPUs differ a little; a wrong, corrupt or mis-exported model differs a lot)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from trapline.contracts import Detection
from trapline.edge.detector import Detector
from trapline.edge.imaging import BadImageError, decode_image
from trapline.manifest import ModelManifest, ReferenceDetection

log = logging.getLogger(__name__)

_MAX_PIXELS = 60_000_000
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    reason: str
    frames: int
    ms: float


def iou(a: Box, b: Box) -> float:
    """Overlap of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def compare(
    expected: list[ReferenceDetection],
    found: list[Detection],
    borderline: float,
    conf_tolerance: float,
    min_iou: float,
) -> str | None:
    """Why `found` does not match `expected` (None when it does). A detection whose confidence is
    below `borderline` may come and go (it sits at the threshold): neither missing nor extra."""
    unmatched = list(found)
    for want in sorted(expected, key=lambda d: -d.conf):
        same = [f for f in unmatched if f.category == want.category]
        best = max(same, key=lambda f: iou(f.bbox, want.bbox), default=None)
        if (
            best is not None
            and iou(best.bbox, want.bbox) >= min_iou
            and abs(best.conf - want.conf) <= conf_tolerance
        ):
            unmatched.remove(best)
            continue
        if want.conf < borderline:
            continue
        closest = (
            f"closest {best.category} conf {best.conf:.2f} IoU {iou(best.bbox, want.bbox):.2f}"
            if best is not None
            else f"no {want.category} found"
        )
        return f"expected {want.category} conf {want.conf:.2f} at {list(want.bbox)}: {closest}"
    extra = [f for f in unmatched if f.conf >= borderline]
    if extra:
        return f"unexpected {extra[0].category} conf {extra[0].conf:.2f} at {list(extra[0].bbox)}"
    return None


def run_self_test(detector: Detector, bundle: Path, manifest: ModelManifest) -> SelfTestResult:
    started = time.perf_counter()
    spec = manifest.self_test
    if spec is None:
        # the detector has loaded and run a warm-up frame: all a bundle without references allows
        log.warning("%s v%s has no reference frames: only checked that it loads and runs",
                    manifest.name, manifest.version)  # fmt: skip
        return SelfTestResult(True, "no reference frames in the bundle (loaded and ran)", 0, 0.0)
    recorded = manifest.thresholds.conf
    borderline = max(recorded, detector.thresholds.conf) + spec.conf_tolerance
    for frame in spec.frames:
        if frame.file not in manifest.files:  # only signed pictures count
            return _failed(f"reference frame {frame.file} is not listed in the manifest", started)
        try:
            image = decode_image((bundle / frame.file).read_bytes(), _MAX_PIXELS)
        except (OSError, BadImageError) as exc:
            return _failed(f"reference frame {frame.file}: {exc}", started)
        found = [d for d in detector.detect(image).detections if d.conf >= recorded]
        problem = compare(frame.detections, found, borderline, spec.conf_tolerance, spec.min_iou)
        if problem is not None:
            return _failed(f"{frame.file}: {problem}", started)
    ms = (time.perf_counter() - started) * 1000
    return SelfTestResult(True, f"{len(spec.frames)} reference frames as recorded", len(spec.frames), ms)


def _failed(reason: str, started: float) -> SelfTestResult:
    return SelfTestResult(False, reason, 0, (time.perf_counter() - started) * 1000)
