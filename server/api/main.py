"""The FastAPI application: JSON API under /api/v1 (OpenAPI at /docs) and the dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from trapline.server.api.routes import (
    dead_letters,
    deployments,
    detections,
    devices,
    enrolment,
    exports,
    inference,
    jobs,
    labels,
    learning,
    media,
    models,
    ota,
    session,
    sites,
    stats,
)
from trapline.server.core.config import ServerSettings
from trapline.server.db import make_engine, session_factory
from trapline.server.jobs import JobQueue
from trapline.server.web import pages

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    app = FastAPI(
        title="Trapline", version="0.1.0", description="Camera-trap fleet: detections, traps, models"
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.sessions = session_factory(app.state.engine)
    app.state.jobs = JobQueue(settings, app.state.sessions)
    v1 = APIRouter(prefix="/api/v1")
    for module in (
        devices,
        detections,
        media,
        models,
        session,
        dead_letters,
        inference,
        jobs,
        deployments,
        exports,
        labels,
        enrolment,
        sites,
        ota,
        learning,
        stats,
    ):
        v1.include_router(module.router)
    v1.include_router(models.releases_router)
    app.include_router(v1)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
