"""Frames ready for the model: decoded at reduced scale, one frame ahead of inference.

`FrameDecoder` turns a `Frame` into a `DecodedFrame`: header checks, sha256, the pixels the model
needs (at half scale where the photo is at least twice the model input: edge.imaging), the night
flag, and - given the detector's `prepare` - the letterboxed input tensor itself. The
full-resolution picture is needed only for crops and thumbnails of frames with detections; it is
decoded on first use, from the original bytes, which are what is hashed and uploaded.

`prefetched` decodes the next frame on a worker thread while the current one is in inference:
OpenCV's JPEG decoder and hashlib release the GIL, so on a Raspberry Pi 4 the decode runs on a core
the two inference threads leave free. The source itself is still iterated on the calling thread
(sources ask the spool, whose SQLite connection belongs to that thread).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from trapline.edge.imaging import BadImageError, decode_image, decode_image_reduced, is_night
from trapline.edge.sources import Frame
from trapline.edge.yolo import Letterbox

Prepare = Callable[[np.ndarray], tuple[np.ndarray, Letterbox]]

log = logging.getLogger(__name__)


@dataclass
class DecodedFrame:
    frame: Frame
    data: bytes
    sha256: str
    image: np.ndarray | None  # pixels for the model; None when `error` says why not
    reduction: int = 1  # the model's pixels are the photo scaled down by this factor
    width: int = 0  # the photo's own size
    height: int = 0
    error: str | None = None
    max_pixels: int = 0
    night: bool = False
    tensor: np.ndarray | None = None  # the model's input, when the decoder was given `prepare`
    letterbox: Letterbox | None = None
    target: DecodeTarget | None = None  # the model it was decoded for
    _full: np.ndarray | None = field(default=None, repr=False)

    def full_image(self) -> np.ndarray:
        """The photo at full resolution (for crops and thumbnails), decoded once, on demand."""
        if self.image is None:
            raise BadImageError(self.error or "frame was not decoded")
        if self.reduction == 1:
            return self.image
        if self._full is None:
            try:
                self._full = decode_image(self.data, self.max_pixels)
            except BadImageError as exc:  # decoded at reduced scale, so this should not happen
                log.warning("%s: full-resolution decode failed (%s); using the reduced picture",
                            self.frame.name, exc.reason)  # fmt: skip
                self._full = self.image
        return self._full


@dataclass(frozen=True)
class DecodeTarget:
    """What frames are decoded for: one model's input size and, optionally, its `prepare`."""

    input_width: int
    input_height: int
    prepare: Prepare | None = None


class FrameDecoder:
    def __init__(
        self,
        input_width: int,
        input_height: int,
        max_pixels: int,
        reduced: bool = True,
        prepare: Prepare | None = None,
    ) -> None:
        self.max_pixels = max_pixels
        self.reduced = reduced
        self.target = DecodeTarget(input_width, input_height, prepare)

    def retarget(self, input_width: int, input_height: int, prepare: Prepare | None = None) -> None:
        """Decode for another model from now on (a model update). Replaced in one assignment: a
        decode running on the prefetch thread keeps the target it started with, and its frame
        says which (`DecodedFrame.target`)."""
        self.target = DecodeTarget(input_width, input_height, prepare)

    def decode(self, frame: Frame) -> DecodedFrame:
        target = self.target
        data = frame.data or b""
        digest = hashlib.sha256(data).hexdigest()
        decoded = DecodedFrame(frame, data, digest, None, max_pixels=self.max_pixels, target=target)
        try:
            if frame.image is not None:  # a camera that hands over pixels, not a file
                decoded.image = frame.image
            elif self.reduced:
                decoded.image, decoded.reduction, decoded.width, decoded.height = decode_image_reduced(
                    data, self.max_pixels, target.input_width, target.input_height
                )
            else:
                decoded.image = decode_image(data, self.max_pixels)
        except BadImageError as exc:
            decoded.error = exc.reason
            return decoded
        if not decoded.width:
            decoded.height, decoded.width = decoded.image.shape[:2]
        decoded.night = is_night(decoded.image)
        if target.prepare is not None:
            decoded.tensor, decoded.letterbox = target.prepare(decoded.image)
        return decoded


def prefetched(
    frames: Iterator[Frame | None], decoder: FrameDecoder, enabled: bool = True
) -> Iterator[DecodedFrame | None]:
    """The source's frames, decoded; with `enabled`, each decoded while the previous one is used.

    None (the source is idle) is passed through, after any frame still being decoded."""
    if not enabled:
        for frame in frames:
            yield decoder.decode(frame) if frame is not None else None
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending: Future[DecodedFrame] | None = None
        for frame in frames:
            if frame is None:
                if pending is not None:
                    yield pending.result()
                    pending = None
                yield None
                continue
            upcoming = pool.submit(decoder.decode, frame)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()
