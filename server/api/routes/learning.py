"""The learning loop's API: start extraction, clustering and retraining jobs; read clustering runs;
review crops (label one, several or a whole cluster, minus excluded crops); corrections are newer
labels, with who and when."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import cv2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from trapline.server.api.deps import AdminDep, SessionDep, SettingsDep, UserDep
from trapline.server.clustering.crops import CropError
from trapline.server.clustering.items import PictureFinder, load_items
from trapline.server.learning.labels import (
    NOT_AN_ANIMAL,
    cluster_keys,
    crop_key,
    current_labels,
    label_cluster,
    label_crops,
    normalise_label,
)
from trapline.server.learning.negatives import devices_of
from trapline.server.models import ClusteringRun, ClusterMember, CropLabel, RetrainRun

router = APIRouter(prefix="/learning", tags=["learning"])
CROP_KEY = re.compile(r"^[dm][0-9]{1,18}$")
RUN_FILE = re.compile(
    r"^(elbow|silhouette|tsne)\.png$|^(cluster-[0-9]{2,3}|unknown)\.jpg$|^report\.(md|json)$"
)


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extractor: Literal["resnet152", "yolo-backbone"] | None = None
    runtime: Literal["onnxruntime", "torch"] | None = None
    greyscale: bool = False
    parallel: int = Field(1, ge=1, le=32, description="workers that may share the job")


class ClusterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extractor: Literal["resnet152", "yolo-backbone"] | None = None
    mode: Literal["none", "centre", "greyscale"] | None = None
    k: int | None = Field(None, ge=2, le=200)
    seed: int = 0


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[str] = Field(min_length=1, max_length=5000)
    label: str = Field(min_length=1, max_length=200)


class ClusterLabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=200)
    exclude: list[str] = Field(default_factory=list, max_length=5000)


class Queued(BaseModel):
    job_id: str


def _check_keys(keys: list[str]) -> None:
    bad = [k for k in keys if not CROP_KEY.match(k)]
    if bad:
        raise HTTPException(422, f"not crop keys: {bad[:5]}")


def _publish_negatives(request: Request, session: SessionDep, keys: list[str], label: str) -> None:
    """A "not an animal" box becomes part of its camera's memory: rebuild and send it (a job)."""
    if label == NOT_AN_ANIMAL:
        for device_id in devices_of(session, keys):
            request.app.state.jobs.enqueue("ignore_regions", {"device_id": device_id})


@router.post("/extract", response_model=Queued, status_code=202)
def start_extraction(
    body: ExtractRequest, request: Request, settings: SettingsDep, _admin: AdminDep
) -> Queued:
    params = {
        "extractor": body.extractor or settings.feature_extractor,
        "runtime": body.runtime or settings.feature_runtime,
        "greyscale": body.greyscale,
    }
    return Queued(job_id=request.app.state.jobs.enqueue("extract_features", params, parallel=body.parallel))


@router.post("/cluster", response_model=Queued, status_code=202)
def start_clustering(
    body: ClusterRequest, request: Request, settings: SettingsDep, _admin: AdminDep
) -> Queued:
    params: dict[str, Any] = {
        "extractor": body.extractor or settings.feature_extractor,
        "runtime": settings.feature_runtime,
        "mode": body.mode or settings.clustering_illumination,
        "seed": body.seed,
        "reference": [str(p) for p in settings.reference_labels],
    }
    if body.k:
        params["k"] = body.k
    return Queued(job_id=request.app.state.jobs.enqueue("cluster", params))


@router.post("/retrain", response_model=Queued, status_code=202)
def start_retraining(request: Request, _admin: AdminDep) -> Queued:
    return Queued(job_id=request.app.state.jobs.enqueue("retrain", {"trigger": "by hand"}))


@router.get("/runs")
def list_runs(session: SessionDep, _user: UserDep) -> list[dict[str, Any]]:
    runs = session.scalars(select(ClusteringRun).order_by(ClusteringRun.created_at.desc()).limit(200))
    return [
        {"id": r.id, "created_at": r.created_at, "extractor": r.extractor, "mode": r.mode, "state": r.state,
         "crops": r.crops, "k": r.k, "unknown": r.report.get("unknown"),
         "agreement": r.report.get("agreement"), "space": r.report.get("space")}
        for r in runs
    ]  # fmt: skip


def _run(session: SessionDep, run_id: str) -> ClusteringRun:
    run = session.get(ClusteringRun, run_id)
    if run is None:
        raise HTTPException(404, f"no clustering run {run_id!r}")
    return run


@router.get("/runs/{run_id}")
def get_run(run_id: str, session: SessionDep, _user: UserDep) -> dict[str, Any]:
    run = _run(session, run_id)
    return {"id": run.id, "state": run.state, "created_at": run.created_at, "mode": run.mode, "k": run.k,
            "crops": run.crops, "report": run.report}  # fmt: skip


@router.get("/runs/{run_id}/files/{name}")
def run_file(run_id: str, name: str, session: SessionDep, _user: UserDep) -> FileResponse:
    run = _run(session, run_id)
    if not RUN_FILE.match(name) or not run.path or not (Path(run.path) / name).is_file():
        raise HTTPException(404, "no such file in this run")
    return FileResponse(Path(run.path) / name)


def _label_out(label: CropLabel | None) -> dict[str, Any] | None:
    if label is None:
        return None
    return {"label": label.label, "by": label.labelled_by, "at": label.labelled_at}


@router.get("/runs/{run_id}/clusters/{cluster}")
def get_cluster(run_id: str, cluster: int, session: SessionDep, _user: UserDep) -> dict[str, Any]:
    _run(session, run_id)
    members = list(
        session.scalars(
            select(ClusterMember)
            .where(ClusterMember.run_id == run_id, ClusterMember.cluster == cluster)
            .order_by(ClusterMember.rank)
        )
    )
    if not members:
        raise HTTPException(404, f"run {run_id} has no cluster {cluster}")
    keys = [crop_key(m) for m in members]
    labels = current_labels(session, keys)
    return {
        "run_id": run_id,
        "cluster": cluster,
        "crops": [
            {"key": key, "probability": m.probability, "distance": m.distance, "source": m.source_kind,
             "suggestion": m.suggestion, "suggestion_probability": m.suggestion_probability,
             "label": _label_out(labels.get(key))}
            for key, m in zip(keys, members, strict=True)
        ],
    }  # fmt: skip


@router.get("/crops/{key}.jpg")
def crop_picture(key: str, session: SessionDep, settings: SettingsDep, _user: UserDep) -> Response:
    """The crop as the extractor saw it (224 x 224), cut from the stored picture."""
    _check_keys([key])
    items = load_items(session, [key])
    if not items:
        raise HTTPException(404, f"no crop {key}")
    try:
        pixels = PictureFinder(session, settings.media_dir, items).cut(items[0]).pixels
    except CropError as exc:
        raise HTTPException(404, str(exc)) from exc
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise HTTPException(500, "could not encode the crop")
    return Response(
        data.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.post("/labels", status_code=201)
def post_labels(body: LabelRequest, request: Request, session: SessionDep, user: UserDep) -> dict[str, Any]:
    """Label crops (a species, "not an animal" or "unsure"); labelling again corrects."""
    _check_keys(body.keys)
    try:
        label = normalise_label(body.label)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if len(load_items(session, body.keys)) != len(set(body.keys)):
        raise HTTPException(404, "some crops do not exist")
    rows = label_crops(session, body.keys, label, user.name)
    session.commit()
    _publish_negatives(request, session, body.keys, label)
    return {"labelled": len(rows), "label": label}


@router.post("/runs/{run_id}/clusters/{cluster}/label", status_code=201)
def post_cluster_label(
    run_id: str, cluster: int, body: ClusterLabelRequest, request: Request, session: SessionDep, user: UserDep
) -> dict[str, Any]:
    """Label a whole cluster except the crops the reviewer excluded."""
    _run(session, run_id)
    _check_keys(body.exclude)
    try:
        rows = label_cluster(session, run_id, cluster, body.label, user.name, body.exclude)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    session.commit()
    keys = [crop_key(r) for r in rows]
    _publish_negatives(request, session, keys, rows[0].label if rows else "")
    excluded = len(set(body.exclude) & set(cluster_keys(session, run_id, cluster)))
    return {"labelled": len(rows), "excluded": excluded, "label": rows[0].label if rows else None}


@router.get("/labels/{key}")
def label_history(key: str, session: SessionDep, _user: UserDep) -> list[dict[str, Any]]:
    """Every label a crop was given, newest first."""
    _check_keys([key])
    column = CropLabel.detection_id if key[0] == "d" else CropLabel.media_id
    rows = session.scalars(select(CropLabel).where(column == int(key[1:])).order_by(CropLabel.id.desc()))
    return [{"label": r.label, "by": r.labelled_by, "at": r.labelled_at, "run_id": r.run_id} for r in rows]


@router.get("/retrains")
def list_retrains(session: SessionDep, _user: UserDep) -> list[dict[str, Any]]:
    runs = session.scalars(select(RetrainRun).order_by(RetrainRun.created_at.desc()).limit(100))
    return [{"id": r.id, "created_at": r.created_at, "state": r.state, "labels_used": r.labels_used,
             "candidate_version": r.candidate_version, "gate": r.report.get("gate")}
            for r in runs]  # fmt: skip
