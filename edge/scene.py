"""Tamper and drift: is the camera still looking at the scene it was set up on?

A knocked, turned or stolen camera, or a leaf over the lens, is a common loss in the field: the
trap keeps running and reports empty frames for weeks. Now and then the agent compares a daytime
frame with the reference photo taken at provisioning:

- **features in place**: ORB features of the reference found again at (nearly) the same place in
  the frame. A camera that has not moved keeps most of the background's features where they were,
  whatever the light; a shifted or turned one keeps almost none in place.
- **detail**: the frame's edge energy against the reference's. A lens covered up close (a leaf,
  mud, a hand, a bag) is out of focus or dark: the detail collapses.

Both are computed on small grey images (320 px wide, contrast-equalised), in tens of milliseconds
on a Pi. Night (infrared) frames are skipped: they cannot be compared with a daytime reference.
Thresholds were measured on the development photos (README, "Tamper and drift").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

ViewState = Literal["ok", "shifted", "blocked"]
WIDTH = 320
# a feature "in place" moved less than this share of the image width (wind, JPEG, sensor jitter)
IN_PLACE_SHARE = 0.03
MAX_TURN_DEG = 2.0
MAX_ZOOM = 0.05
MIN_MATCHES = 12


@dataclass(frozen=True)
class SceneComparison:
    state: ViewState
    features_in_place: float  # share of the reference's features found where they were, 0..1
    detail: float  # the frame's edge energy relative to the reference's, capped at 1


def _small(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = grey.shape[:2]
    small: np.ndarray = cv2.resize(
        grey, (WIDTH, max(1, round(height * WIDTH / width))), interpolation=cv2.INTER_AREA
    )
    return small


def _equalised(small: np.ndarray) -> np.ndarray:
    # features under any light: local contrast equalisation before ORB
    equalised: np.ndarray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(small)
    return equalised


def _detail(grey: np.ndarray) -> float:
    # on the plain grey image: equalisation would lift the faint texture of a dark cover
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(np.hypot(gx, gy)))


class SceneReference:
    """The reference photo, prepared once; `compare` takes a decoded BGR frame."""

    def __init__(self, image: np.ndarray, shifted_below: float = 0.35, blocked_below: float = 0.25) -> None:
        self.shifted_below = shifted_below
        self.blocked_below = blocked_below
        self._orb = cv2.ORB.create(nfeatures=500)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        small = _small(image)
        self._detail = max(_detail(small), 1e-6)
        self._points, self._descriptors = self._orb.detectAndCompute(_equalised(small), None)
        if self._descriptors is None or len(self._points) < 20:
            log.warning("reference photo has few features (%d): tamper checks unreliable", len(self._points))

    def compare(self, image: np.ndarray) -> SceneComparison:
        small = _small(image)
        detail = min(1.0, _detail(small) / self._detail)
        in_place, moved = self._features_in_place(_equalised(small))
        state: ViewState = "ok"
        if detail < self.blocked_below:
            state = "blocked"
        elif moved or in_place < self.shifted_below:
            state = "shifted"
        return SceneComparison(state, round(in_place, 3), round(detail, 3))

    def _features_in_place(self, grey: np.ndarray) -> tuple[float, bool]:
        """(share of the reference's features found where they were, whether the view moved).

        The view moved when the features that match cannot be explained by a camera standing
        still: the similarity transform fitted to them (RANSAC) shifts the picture by more than
        IN_PLACE_SHARE of its width, turns it by more than MAX_TURN_DEG or zooms it; or too few
        features match for any transform (another scene)."""
        if self._descriptors is None or not self._points:
            return 0.0, True
        points, descriptors = self._orb.detectAndCompute(grey, None)
        if descriptors is None or len(points) < 2:
            return 0.0, True
        good = [
            pair[0]
            for pair in self._matcher.knnMatch(self._descriptors, descriptors, k=2)
            if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance
        ]
        if len(good) < MIN_MATCHES:
            return 0.0, True
        src = np.array([self._points[m.queryIdx].pt for m in good], dtype=np.float32)
        dst = np.array([points[m.trainIdx].pt for m in good], dtype=np.float32)
        transform, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0
        )
        if transform is None or int(inliers.sum()) < MIN_MATCHES:
            return 0.0, True
        limit = IN_PLACE_SHARE * WIDTH
        moved_by = np.abs(dst - src).max(axis=1)
        in_place = int(np.count_nonzero((moved_by <= limit) & inliers.ravel().astype(bool)))
        height = grey.shape[0]
        centre = transform @ np.array([WIDTH / 2, height / 2, 1.0]) - np.array([WIDTH / 2, height / 2])
        turn = abs(float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))))
        zoom = float(np.hypot(transform[0, 0], transform[1, 0]))
        moved = bool(np.hypot(*centre) > limit or turn > MAX_TURN_DEG or abs(zoom - 1) > MAX_ZOOM)
        return in_place / len(self._points), moved
