"""Run the current model on an uploaded photo: detections as JSON, or the photo with boxes."""

from __future__ import annotations

import threading
from typing import Any

import cv2
from fastapi import APIRouter, HTTPException, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel

from trapline.contracts import Detection, ModelRef
from trapline.edge.detector import Detector
from trapline.edge.imaging import BadImageError, decode_image
from trapline.model_source import resolve_model
from trapline.server.api.deps import UserDep

router = APIRouter(prefix="/inference", tags=["inference"])
MAX_PIXELS = 60_000_000
_lock = threading.Lock()  # one model, loaded once, used by one request at a time


class InferenceResult(BaseModel):
    model: ModelRef
    width: int
    height: int
    inference_ms: float
    detections: list[Detection]


def _detector(request: Request) -> Detector:
    state: Any = request.app.state
    if getattr(state, "detector", None) is None:
        settings = state.settings
        state.detector = Detector(resolve_model(settings.inference_model, settings.release_keyring))
    detector: Detector = state.detector
    return detector


async def _run(request: Request, file: UploadFile) -> tuple[Any, InferenceResult]:
    data = await file.read(100 * 1024 * 1024)
    try:
        image = decode_image(data, MAX_PIXELS)
    except BadImageError as exc:
        raise HTTPException(415, f"not a usable photo: {exc.reason}") from exc
    with _lock:
        detector = _detector(request)
        result = detector.detect(image)
    return image, InferenceResult(
        model=detector.info.ref,
        width=image.shape[1],
        height=image.shape[0],
        inference_ms=round(result.inference_ms, 2),
        detections=result.detections,
    )


@router.post("", response_model=InferenceResult)
async def infer(request: Request, file: UploadFile, _user: UserDep) -> InferenceResult:
    _, result = await _run(request, file)
    return result


@router.post("/annotated", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def infer_annotated(request: Request, file: UploadFile, _user: UserDep) -> Response:
    image, result = await _run(request, file)
    height, width = image.shape[:2]
    thickness = max(2, width // 400)
    for det in result.detections:
        x, y, w, h = det.bbox
        p1, p2 = (round(x * width), round(y * height)), (round((x + w) * width), round((y + h) * height))
        cv2.rectangle(image, p1, p2, (74, 213, 255), thickness)
        label = f"{det.category} {det.conf:.2f}"
        cv2.putText(
            image,
            label,
            (p1[0], max(20, p1[1] - 8)),
            cv2.FONT_HERSHEY_SIMPLEX,
            thickness / 3,
            (74, 213, 255),
            thickness,
        )
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise HTTPException(500, "could not encode the annotated picture")
    return Response(jpeg.tobytes(), media_type="image/jpeg")
