"""Our numpy pre/post-processing against Ultralytics' own predict, on the same model files."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import CAMTRAP, SHARED_WEIGHTS, needs_shared
from trapline.edge.backends import TensorSpec
from trapline.edge.config import PACKAGED_MODELS
from trapline.edge.detector import Detector

pytestmark = pytest.mark.slow

CONF, IOU = 0.25, 0.7


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    images = sorted(needs_shared(CAMTRAP / "images").glob("*/*"))
    return images[::5]  # 23 photos across all six subsets: day, night, owls, jaguars, squirrels


@pytest.fixture(scope="module")
def onnx_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n COCO exported to FP32 ONNX by Ultralytics itself."""
    from ultralytics import YOLO

    weights = tmp_path_factory.mktemp("fp32") / "yolov8n-coco.pt"
    shutil.copyfile(needs_shared(SHARED_WEIGHTS / "yolov8n-coco.pt"), weights)
    return Path(YOLO(str(weights)).export(format="onnx", imgsz=640, simplify=True))


def _model(request: pytest.FixtureRequest, name: str) -> Path:
    if name == "onnx-fp32":
        return Path(request.getfixturevalue("onnx_fp32"))
    if name.endswith("-packaged"):
        return PACKAGED_MODELS / name.removesuffix("-packaged")
    return needs_shared(SHARED_WEIGHTS / name)


@pytest.mark.parametrize(
    "model_name",
    [
        "onnx-fp32",
        "yolov8n-coco-int8-dynamic.onnx-packaged",
        "yolov8n-coco-int8.tflite-packaged",
        "trapline-nano/model.onnx-packaged",  # the shipped model: static QDQ INT8, 416 px
        "yolov8n-coco-int8-io.tflite",
    ],
)
def test_detections_match_ultralytics(
    request: pytest.FixtureRequest,
    photos: list[Path],
    model_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ultralytics import YOLO

    model_path = _model(request, model_name)
    if model_name.endswith("-io.tflite"):
        # Ultralytics 8.4 quantizes int8 inputs with astype() (truncation); we round, which is
        # the correct affine quantization. Emulate its truncation here so the comparison tests
        # the rest of the pipeline; the rounding itself is tested in test_yolo.py.
        def truncating(canvas: np.ndarray, spec: TensorSpec) -> np.ndarray:
            q = canvas[..., ::-1].astype(np.float32) / 255.0 / spec.scale + spec.zero_point
            return np.ascontiguousarray(q.astype(spec.dtype)[None])

        monkeypatch.setattr("trapline.edge.detector.to_input_tensor", truncating)
    ours = Detector(model_path, conf_threshold=CONF, iou_threshold=IOU, nms_by="class")
    theirs = YOLO(str(model_path), task="detect")
    ious: list[float] = []
    total = 0
    size = ours.info.input_height
    for photo in photos:
        image = cv2.imread(str(photo))
        assert image is not None
        mine = ours.detect(image).raw
        # we shrink with area averaging (as Ultralytics' validation loader does; see edge.yolo),
        # its predict with bilinear: hand it the photo already shrunk, so its letterbox only pads
        gain = min(size / image.shape[0], size / image.shape[1])
        shrunk = cv2.resize(
            image, (round(image.shape[1] * gain), round(image.shape[0] * gain)), interpolation=cv2.INTER_AREA
        )
        ref = theirs.predict(shrunk, conf=CONF, iou=IOU, imgsz=size, verbose=False)[0]
        ref_boxes = ref.boxes.xyxy.numpy() * np.asarray(
            [image.shape[1] / shrunk.shape[1], image.shape[0] / shrunk.shape[0]] * 2
        )
        ref_classes = ref.boxes.cls.numpy().astype(int)
        assert len(mine) == len(ref_boxes), f"{photo.name}: {len(mine)} boxes, Ultralytics {len(ref_boxes)}"
        total += len(mine)
        for box, cls in zip(mine.boxes, mine.class_ids, strict=True):
            same_class = [
                _iou(box, ref_box) for ref_box, c in zip(ref_boxes, ref_classes, strict=True) if c == cls
            ]
            ious.append(max(same_class, default=0.0))
    assert total >= 10, "too few detections to compare: the photos or thresholds are off"
    assert float(np.mean(ious)) >= 0.99
