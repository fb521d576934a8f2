"""Run the current model on an uploaded photo: detections as JSON, or the photo with boxes.

Decoding and inference are CPU work: they run in a bounded pool of threads (`inference_threads`),
never on the event loop, so one large photo does not stall every other request. A photo over
`max_upload_bytes` is refused (413) before it is read, never truncated.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

from trapline.contracts import Detection, ModelRef
from trapline.edge.detector import Detector
from trapline.edge.imaging import BadImageError, decode_image
from trapline.model_source import resolve_model
from trapline.server.api.deps import SettingsDep, UserDep
from trapline.server.api.uploads import MULTIPART_FILE, file_bytes, read_form

router = APIRouter(prefix="/inference", tags=["inference"])
MAX_PIXELS = 60_000_000
_load_lock = threading.Lock()  # the model is loaded once
_run_lock = threading.Lock()  # and runs one picture at a time (TFLite interpreters are not thread-safe)


class InferenceResult(BaseModel):
    model: ModelRef
    width: int
    height: int
    inference_ms: float
    detections: list[Detection]


def _detector(request: Request) -> Detector:
    state: Any = request.app.state
    with _load_lock:
        if getattr(state, "detector", None) is None:
            settings = state.settings
            state.detector = Detector(resolve_model(settings.inference_model, settings.release_keyring))
    detector: Detector = state.detector
    return detector


def _limiter(request: Request) -> CapacityLimiter:
    state: Any = request.app.state
    if getattr(state, "inference_limiter", None) is None:
        state.inference_limiter = CapacityLimiter(state.settings.inference_threads)
    limiter: CapacityLimiter = state.inference_limiter
    return limiter


def _detect(detector: Detector, data: bytes) -> tuple[np.ndarray, InferenceResult]:
    try:
        image = decode_image(data, MAX_PIXELS)
    except BadImageError as exc:
        raise HTTPException(415, f"not a usable photo: {exc.reason}") from exc
    with _run_lock:
        result = detector.detect(image)
    return image, InferenceResult(
        model=detector.info.ref,
        width=image.shape[1],
        height=image.shape[0],
        inference_ms=round(result.inference_ms, 2),
        detections=result.detections,
    )


async def _run(request: Request, limit: int) -> tuple[np.ndarray, InferenceResult]:
    form = await read_form(request, limit, max_fields=1)
    try:
        data = await file_bytes(form, "file", limit)
    finally:
        await form.close()
    limiter = _limiter(request)
    detector = await to_thread.run_sync(_detector, request, limiter=limiter)
    return await to_thread.run_sync(_detect, detector, data, limiter=limiter)


def _annotate(image: np.ndarray, result: InferenceResult) -> bytes:
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
    return bytes(jpeg.tobytes())


@router.post("", response_model=InferenceResult, openapi_extra=MULTIPART_FILE)
async def infer(request: Request, _user: UserDep, settings: SettingsDep) -> InferenceResult:
    """Detections in the photo `file` (multipart)."""
    _, result = await _run(request, settings.max_upload_bytes)
    return result


@router.post(
    "/annotated",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    openapi_extra=MULTIPART_FILE,
)
async def infer_annotated(request: Request, _user: UserDep, settings: SettingsDep) -> Response:
    """The photo `file` (multipart) with its detections drawn, as JPEG."""
    image, result = await _run(request, settings.max_upload_bytes)
    jpeg = await to_thread.run_sync(_annotate, image, result, limiter=_limiter(request))
    return Response(jpeg, media_type="image/jpeg")
