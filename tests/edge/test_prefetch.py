"""Reduced-scale decoding and the one-frame-ahead decoder (edge.prefetch)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import CAMTRAP, SHARED_WEIGHTS, needs_shared
from trapline.edge.imaging import decode_image, decode_image_reduced, reduction_for
from trapline.edge.prefetch import DecodedFrame, FrameDecoder, prefetched
from trapline.edge.sources import Frame

MAX = 60_000_000


def _jpeg(width: int, height: int) -> bytes:
    gradient = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    image = np.ascontiguousarray(np.broadcast_to(gradient, (height, width, 3)))
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _frame(data: bytes, name: str = "f.jpg") -> Frame:
    return Frame(key=name, name=name, captured_at=datetime.now(UTC), data=data)


@pytest.mark.parametrize(
    ("size", "model", "factor"),
    [
        ((2048, 1536), (416, 416), 2),  # 1/4 would do (512x384 covers 416x312), but moves boxes
        ((2048, 1536), (640, 640), 2),
        ((1280, 720), (416, 416), 2),
        ((1000, 750), (640, 640), 1),
        ((800, 600), (640, 640), 1),  # less than twice the input: a full decode
        ((640, 640), (640, 640), 1),
    ],
)
def test_reduction_keeps_at_least_the_pixels_the_letterbox_keeps(
    size: tuple[int, int], model: tuple[int, int], factor: int
) -> None:
    assert reduction_for(*size, *model) == factor


def test_reduced_decode_reports_the_photo_size_from_its_header() -> None:
    image, factor, width, height = decode_image_reduced(_jpeg(1001, 751), MAX, 416, 416)
    assert factor == 2
    assert (width, height) == (1001, 751)
    assert image.shape[:2] == (376, 501)  # libjpeg rounds the scaled size up


def test_decoder_keeps_the_original_bytes_and_decodes_full_resolution_only_on_demand() -> None:
    data = _jpeg(2048, 1536)
    decoded = FrameDecoder(416, 416, MAX).decode(_frame(data))
    assert decoded.image is not None and decoded.image.shape[:2] == (768, 1024)
    assert (decoded.width, decoded.height, decoded.reduction) == (2048, 1536, 2)
    assert decoded.data is data
    assert decoded._full is None
    assert decoded.full_image().shape[:2] == (1536, 2048)
    assert decoded.full_image() is decoded.full_image()  # decoded once


def test_decoder_turns_bad_files_into_a_reason() -> None:
    decoded = FrameDecoder(416, 416, MAX).decode(_frame(b"\xff\xd8\xff not really"))
    assert decoded.image is None
    assert decoded.error is not None and "JPEG" in decoded.error


def test_a_frame_decoded_before_a_model_switch_says_which_model_it_was_decoded_for() -> None:
    # the agent decodes such a frame again (edge/agent.py): its pixels and tensor fit the old model
    decoder = FrameDecoder(416, 416, MAX, prepare=lambda image: (image[:1], None))  # type: ignore[arg-type,return-value]
    before = decoder.decode(_frame(_jpeg(2048, 1536)))
    decoder.retarget(1280, 1280)
    after = decoder.decode(_frame(_jpeg(2048, 1536)))
    assert before.target is not decoder.target and after.target is decoder.target
    assert (before.reduction, after.reduction) == (2, 1)  # 1536 px is not twice 1280: full decode
    assert before.tensor is not None and after.tensor is None  # the new target has no prepare


def test_full_decode_when_reduction_is_off() -> None:
    decoded = FrameDecoder(416, 416, MAX, reduced=False).decode(_frame(_jpeg(2048, 1536)))
    assert decoded.reduction == 1 and decoded.image is not None
    assert decoded.image.shape[:2] == (1536, 2048)


class _RecordingDecoder(FrameDecoder):
    def __init__(self) -> None:
        super().__init__(416, 416, MAX)
        self.threads: list[str] = []

    def decode(self, frame: Frame) -> DecodedFrame:
        self.threads.append(threading.current_thread().name)
        return super().decode(frame)


def _source(names: list[str | None]) -> Iterator[Frame | None]:
    for name in names:
        yield None if name is None else _frame(_jpeg(64, 48), name)


def test_prefetch_keeps_order_passes_idle_through_and_decodes_on_a_worker() -> None:
    decoder = _RecordingDecoder()
    out = list(prefetched(_source(["a", "b", None, "c"]), decoder))
    assert [None if d is None else d.frame.name for d in out] == ["a", "b", None, "c"]
    assert all(name.startswith("decode") for name in decoder.threads)


def test_prefetch_takes_the_next_frame_before_the_current_one_is_handed_back() -> None:
    pulled: list[str] = []

    def source() -> Iterator[Frame | None]:
        for name in ("a", "b", "c"):
            pulled.append(name)
            yield _frame(_jpeg(64, 48), name)

    stream = prefetched(source(), FrameDecoder(416, 416, MAX))
    first = next(stream)
    assert first is not None and first.frame.name == "a"
    assert pulled == ["a", "b"]  # "b" is being decoded while "a" is in inference
    assert [d.frame.name for d in stream if d is not None] == ["b", "c"]


def test_prefetch_off_decodes_in_line() -> None:
    decoder = _RecordingDecoder()
    assert len([d for d in prefetched(_source(["a", "b"]), decoder, enabled=False) if d]) == 2
    assert decoder.threads == [threading.current_thread().name] * 2


@pytest.mark.slow
def test_detections_from_reduced_decode_match_full_decode(tmp_path: Path) -> None:
    """On the shared photos (FP32 model: the pre-processing alone), every box the model is sure of
    (>= 0.5) comes back from the half-scale decode, mean IoU >= 0.99; of all boxes at the 0.25
    operating threshold, at most 5% flip across it."""
    import shutil

    from ultralytics import YOLO

    from trapline.edge.detector import Detector
    from trapline.training.boxes import md_iou

    weights = tmp_path / "yolov8n-coco.pt"
    shutil.copyfile(needs_shared(SHARED_WEIGHTS / "yolov8n-coco.pt"), weights)
    onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=416, simplify=True))
    detector = Detector(onnx, conf_threshold=0.25)
    photos = sorted(p for p in needs_shared(CAMTRAP / "images").glob("*/*") if p.stat().st_size)
    sure: list[float] = []
    all_boxes: list[float] = []
    reduced = 0
    for photo in photos:
        data = photo.read_bytes()
        small, factor, _, _ = decode_image_reduced(data, MAX, 416, 416)
        reduced += factor > 1
        full = detector.detect(decode_image(data, MAX)).detections
        fast = detector.detect(small).detections
        for box in full:
            iou = max((md_iou(box.bbox, b.bbox) for b in fast if b.category == box.category), default=0.0)
            all_boxes.append(iou)
            if box.conf >= 0.5:
                sure.append(iou)
    assert reduced >= 90  # most shared photos are at least twice the input
    assert len(sure) >= 20 and min(sure) >= 0.5  # none lost
    assert float(np.mean(sure)) >= 0.99
    assert sum(iou < 0.5 for iou in all_boxes) <= 0.05 * len(all_boxes)


def test_decoder_prepares_the_model_input_off_the_inference_thread() -> None:
    from trapline.edge.yolo import letterbox

    def prepare(image: np.ndarray) -> tuple[np.ndarray, object]:
        canvas, box = letterbox(image, 416, 416)
        return canvas[None], box

    decoded = FrameDecoder(416, 416, MAX, prepare=prepare).decode(_frame(_jpeg(2048, 1536)))  # type: ignore[arg-type]
    assert decoded.tensor is not None and decoded.tensor.shape == (1, 416, 416, 3)
    assert decoded.letterbox is not None and decoded.letterbox.source_width == 1024  # the reduced image
    assert decoded.night  # a grey gradient has no colour
