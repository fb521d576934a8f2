"""HTML pages. Their data comes from the JSON API (same origin, cookie auth) through static/*.js;
charts are drawn with the vendored ECharts, the map with the vendored Leaflet (no internet needed)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from trapline.contracts import CATEGORIES
from trapline.server.api.deps import SessionDep, principal_or_none
from trapline.server.api.routes.ota import device_models, rollout_out
from trapline.server.models import ClusteringRun, ClusterMember, Device, Label, ModelVersion, Release, Rollout

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


def _login_first(request: Request, session: SessionDep) -> Response | None:
    if principal_or_none(request, session) is None:
        return RedirectResponse("/login", status_code=303)
    return None


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {})


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, session: SessionDep) -> Response:
    return _login_first(request, session) or templates.TemplateResponse(request, "overview.html", {})


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, session: SessionDep) -> Response:
    return _login_first(request, session) or templates.TemplateResponse(request, "fleet.html", {})


@router.get("/detections", response_class=HTMLResponse)
def detections_page(request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    devices = list(session.scalars(select(Device.id).order_by(Device.id)))
    species = list(session.scalars(select(Label.species).distinct().order_by(Label.species)))
    context = {"devices": devices, "categories": CATEGORIES, "species": species}
    return templates.TemplateResponse(request, "detections.html", context)


@router.get("/traps/{device_id}", response_class=HTMLResponse)
def trap_page(device_id: str, request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    if session.get(Device, device_id) is None:
        raise HTTPException(404, f"no trap {device_id!r}")
    return templates.TemplateResponse(request, "trap.html", {"device_id": device_id})


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    models = list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))
    return templates.TemplateResponse(request, "models.html", {"models": models})


@router.get("/rollouts", response_class=HTMLResponse)
def rollouts_page(request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    user = principal_or_none(request, session)
    rollouts = [rollout_out(session, r) for r in session.scalars(select(Rollout).order_by(Rollout.id.desc()))]
    releases = list(session.scalars(select(Release).order_by(Release.id.desc())))
    return templates.TemplateResponse(
        request,
        "rollouts.html",
        {
            "rollouts": rollouts,
            "devices": device_models(session),
            "releases": releases,
            "admin": user is not None and user.role == "admin",
        },
    )


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    runs = list(session.scalars(select(ClusteringRun).order_by(ClusteringRun.created_at.desc()).limit(50)))
    return templates.TemplateResponse(request, "review.html", {"runs": runs})


@router.get("/review/{run_id}", response_class=HTMLResponse)
def review_run_page(run_id: str, request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    run = session.get(ClusteringRun, run_id)
    if run is None:
        raise HTTPException(404, f"no clustering run {run_id!r}")
    return templates.TemplateResponse(request, "review_run.html", {"run": run})


@router.get("/review/{run_id}/{cluster}", response_class=HTMLResponse)
def review_cluster_page(run_id: str, cluster: int, request: Request, session: SessionDep) -> Response:
    if (redirect := _login_first(request, session)) is not None:
        return redirect
    found = session.scalar(
        select(ClusterMember.id)
        .where(ClusterMember.run_id == run_id, ClusterMember.cluster == cluster)
        .limit(1)
    )
    if found is None:
        raise HTTPException(404, f"run {run_id!r} has no cluster {cluster}")
    return templates.TemplateResponse(request, "review_cluster.html", {"run_id": run_id, "cluster": cluster})
