"""The FastAPI application: JSON API under /api/v1 and the dashboard.

The OpenAPI document (/openapi.json) and its viewer (/docs) are for logged-in users only, unless
`public_api_docs` is set: they map every endpoint for whoever looks.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from trapline.server.api.deps import SessionDep, UserDep, principal_or_none
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
    public = settings.public_api_docs
    app = FastAPI(
        title="Trapline",
        version="0.1.0",
        description="Camera-trap fleet: detections, traps, models",
        openapi_url="/openapi.json" if public else None,
        docs_url="/docs" if public else None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.export_gate = threading.BoundedSemaphore(settings.export_concurrency)
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
    if not public:
        _private_docs(app)
    return app


def _private_docs(app: FastAPI) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_user: UserDep) -> JSONResponse:
        document: dict[str, Any] = app.openapi()
        return JSONResponse(document)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request, session: SessionDep) -> Response:
        if principal_or_none(request, session) is None:
            return RedirectResponse("/login", status_code=303)
        page: HTMLResponse = get_swagger_ui_html(openapi_url="/openapi.json", title="Trapline API")
        return page
