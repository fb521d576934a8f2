"""Who may start the learning loop's jobs: admins only; a viewer is refused and queues nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.server.conftest import ADMIN, VIEWER, seed, settings_for
from trapline.server.api.main import create_app
from trapline.server.models import Job

STARTS = {
    "/api/v1/learning/extract": ({"extractor": "yolo-backbone", "parallel": 2}, "extract_features"),
    "/api/v1/learning/cluster": ({"mode": "none", "k": 3}, "cluster"),
    "/api/v1/learning/retrain": (None, "retrain"),
}


@pytest.fixture
def app_client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(sqlite_url, tmp_path))
    seed(app)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def kinds(client: TestClient) -> list[str]:
    with client.app.state.sessions() as session:  # type: ignore[attr-defined]
        return sorted(session.scalars(select(Job.kind)))


def test_only_admins_start_learning_jobs(app_client: TestClient) -> None:
    started: list[str] = []
    for path, (body, kind) in STARTS.items():
        assert app_client.post(path, json=body).status_code == 401
        viewer = app_client.post(path, json=body, headers={"Authorization": f"Bearer {VIEWER}"})
        assert viewer.status_code == 403 and viewer.json()["detail"] == "admin role needed"
        assert kinds(app_client) == sorted(started)  # the viewer queued nothing
        admin = app_client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 202, admin.text
        started.append(kind)
        assert kinds(app_client) == sorted(started)
    # a viewer still reads what runs there are
    for listing in ("/api/v1/learning/runs", "/api/v1/learning/retrains"):
        assert app_client.get(listing, headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 200
