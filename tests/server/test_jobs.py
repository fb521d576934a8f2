"""Background jobs through Huey with a real worker process: progress, restart, failure."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SAMPLES
from tests.server.conftest import ADMIN, UPLOAD, VIEWER, seed, settings_for
from trapline.server.api.main import create_app
from trapline.server.db import transaction
from trapline.server.models import Job


@pytest.fixture
def app_and_env(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    settings = settings_for(sqlite_url, tmp_path)
    app = create_app(settings)
    seed(app)
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": sqlite_url,
        "TRAPLINE_SERVER_DATA_DIR": str(settings.data_dir),
    }
    yield app, env
    app.state.engine.dispose()


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "server", "worker"], env=env, stdout=handle, stderr=handle
        )


def _wait_state(client: TestClient, job_id: str, states: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {VIEWER}"}).json()
        if job["state"] in states:
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck: {job}")


def test_dataset_export_job(app_and_env: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    app, env = app_and_env
    with TestClient(app, base_url="https://testserver") as client:
        photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
        for frame in ("trap-01:000000000", "trap-01:000018000"):  # thumbnails for two frames
            client.post("/api/v1/media", data={"kind": "thumbnail", "detection_id": frame},
                        files={"file": ("t.jpg", photo)}, headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
        viewer = client.post("/api/v1/jobs/dataset", json={}, headers={"Authorization": f"Bearer {VIEWER}"})
        assert viewer.status_code == 403
        queued = client.post(
            "/api/v1/jobs/dataset",
            json={"device_id": "trap-01"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert queued.status_code == 202
        job_id = queued.json()["id"]
        assert queued.json()["state"] == "queued"
        early = client.get(f"/api/v1/jobs/{job_id}/download", headers={"Authorization": f"Bearer {VIEWER}"})
        assert early.status_code == 409
        worker = _worker(env, tmp_path / "worker.log")
        try:
            job = _wait_state(client, job_id, {"done", "failed"})
        finally:
            worker.terminate()
            worker.wait(20)
        assert job["state"] == "done", (tmp_path / "worker.log").read_text()
        assert job["progress"] == 1.0
        assert job["message"] == "2 frames, 28 without pictures"
        archive = client.get(f"/api/v1/jobs/{job_id}/download", headers={"Authorization": f"Bearer {VIEWER}"})
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert sorted(n for n in names if n.startswith("images/")) == [
        "images/train/trap-01_000000000.jpg", "images/train/trap-01_000018000.jpg"]  # fmt: skip
    labels = zipfile.ZipFile(io.BytesIO(archive.content)).read("labels/train/trap-01_000000000.txt").decode()
    assert labels.splitlines() == [
        "0 0.250000 0.400000 0.300000 0.400000",
        "1 0.250000 0.400000 0.300000 0.400000",
    ]
    assert "data.yaml" in names


def test_jobs_left_running_by_a_dead_worker_finish_after_restart(
    app_and_env: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    app, env = app_and_env
    now = datetime.now(UTC)
    with transaction(app.state.sessions) as session:
        # as a worker killed mid-job leaves it: running, half done, nothing in the queue
        session.add(
            Job(
                id="job-orphan",
                kind="dataset_zip",
                params={},
                state="running",
                progress=0.5,
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            Job(
                id="job-bad",
                kind="dataset_zip",
                params={"since": "not a date"},
                state="queued",
                progress=0.0,
                created_at=now,
                updated_at=now,
            )
        )
    worker = _worker(env, tmp_path / "worker.log")
    try:
        with TestClient(app, base_url="https://testserver") as client:
            done = _wait_state(client, "job-orphan", {"done", "failed"})
            failed = _wait_state(client, "job-bad", {"failed"}, timeout_s=60)
    finally:
        worker.terminate()
        worker.wait(20)
    assert done["state"] == "done"
    assert "queueing it again" in (tmp_path / "worker.log").read_text()
    assert "ValueError" in failed["message"]
