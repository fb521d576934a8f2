"""Background jobs through Huey with a real worker process: progress, restart, failure."""

from __future__ import annotations

import csv
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
from sqlalchemy import select

from tests.conftest import SAMPLES
from tests.server.conftest import ADMIN, UPLOAD, VIEWER, seed, settings_for
from trapline.server.api.main import create_app
from trapline.server.db import transaction
from trapline.server.models import Detection, Job, Media


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
        # reviewers' labels: the first frame's animal box is "not an animal", its person a species (sic);
        # a below-threshold candidate crop of the second frame is labelled too
        with app.state.sessions() as session:
            first = dict(session.execute(select(Detection.category, Detection.id)
                                         .where(Detection.frame_id == "trap-01:000000000")).tuples().all())  # fmt: skip
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for key, label in ((f"d{first['animal']}", "not an animal"), (f"d{first['person']}", "Homo sapiens")):
            assert client.post("/api/v1/learning/labels", json={"keys": [key], "label": label},
                               headers=admin).status_code == 201  # fmt: skip
        client.post("/api/v1/media", data={"kind": "candidate", "detection_id": "trap-01:000018000"},
                    files={"file": ("c.jpg", photo[:-10] + b"candidate\xd9")},
                    headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
        with app.state.sessions() as session:
            candidate = session.scalars(select(Media.id).where(Media.kind == "candidate")).one()
        assert client.post("/api/v1/learning/labels", json={"keys": [f"m{candidate}"], "label": "genet"},
                           headers=admin).status_code == 201  # fmt: skip
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
        assert job["message"] == "2 frames, 28 without pictures, 3 reviewed labels"
        archive = client.get(f"/api/v1/jobs/{job_id}/download", headers={"Authorization": f"Bearer {VIEWER}"})
    dataset = zipfile.ZipFile(io.BytesIO(archive.content))
    names = dataset.namelist()
    assert sorted(n for n in names if n.startswith("images/")) == [
        "images/train/trap-01_000000000.jpg", "images/train/trap-01_000018000.jpg"]  # fmt: skip
    # the animal box a reviewer called "not an animal" is left out: a hard negative
    assert dataset.read("labels/train/trap-01_000000000.txt").decode().splitlines() == [
        "1 0.250000 0.400000 0.300000 0.400000"
    ]
    assert len(dataset.read("labels/train/trap-01_000018000.txt").decode().splitlines()) == 2  # unreviewed
    reviewed = {r["crop_key"]: r for r in csv.DictReader(io.StringIO(dataset.read("reviewed.csv").decode()))}
    assert {k: (r["label"], r["in_labels_file"], r["labelled_by"]) for k, r in reviewed.items()} == {
        f"d{first['animal']}": ("not an animal", "no", "ada"),
        f"d{first['person']}": ("homo sapiens", "yes", "ada"),
        f"m{candidate}": ("genet", "no", "ada"),
    }
    assert (reviewed[f"d{first['person']}"]["category"], reviewed[f"d{first['person']}"]["bbox_x"]) == (
        "person",
        "0.1",
    )
    assert reviewed[f"m{candidate}"]["image"] == f"candidates/trap-01_000018000-m{candidate}.jpg"
    assert dataset.read(reviewed[f"m{candidate}"]["image"]).endswith(b"candidate\xd9")
    assert "data.yaml" in names and "hard negatives" in dataset.read("README.txt").decode()


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
