"""The weekly retraining: queued on Monday 03:00 UTC only when enough labels arrived since the last
retraining, never twice (a retraining queued or running, several workers' schedulers)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.server.conftest import seed, settings_for
from trapline.server.api.main import create_app
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.jobs import JobQueue
from trapline.server.learning.labels import label_crops
from trapline.server.models import Detection, Job, RetrainRun


@dataclass
class Server:
    settings: ServerSettings
    sessions: sessionmaker[Session]


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[Server]:
    """The API's seeded database (a trap's frames and boxes) and its job queue's settings."""
    app = create_app(settings_for(sqlite_url, tmp_path))
    seed(app)
    yield Server(app.state.settings, app.state.sessions)
    app.state.engine.dispose()


def retrain_jobs(server: Server) -> list[Job]:
    with server.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "retrain")))


def test_the_weekly_check_queues_a_retraining_only_when_enough_labels_are_new(server: Server) -> None:
    server.settings.retrain_min_new_labels = 5
    queue = JobQueue(server.settings, server.sessions)

    def due_at(when: datetime) -> list[str]:  # retention runs every hour beside it
        return [t.name for t in queue.huey.read_periodic(when) if t.name != "retention"]

    due_at_3 = due_at(datetime(2026, 11, 30, 3, 0))  # a Monday
    assert due_at_3 == ["weekly_retrain"]
    assert due_at(datetime(2026, 11, 30, 4, 0)) == []
    assert due_at(datetime(2026, 12, 1, 3, 0)) == []
    with server.sessions() as session:
        boxes = [f"d{i}" for i in session.scalars(select(Detection.id).order_by(Detection.id))]

    with transaction(server.sessions) as session:
        label_crops(session, boxes[:4], "jaguar", "ada")
    assert queue.weekly_retrain() is None and retrain_jobs(server) == []  # 4 < 5

    with transaction(server.sessions) as session:
        label_crops(session, boxes[4:5], "ocelot", "ada")
    job_id = queue.weekly_retrain()
    (job,) = retrain_jobs(server)
    assert job.id == job_id and job.state == "queued" and job.params["trigger"] == "schedule"
    assert "5 new label(s)" in job.params["why"]
    assert queue.weekly_retrain() is None and len(retrain_jobs(server)) == 1  # already queued

    # it ran to a verdict: the labels before it are used up; a failed run would not use them up
    with transaction(server.sessions) as session:
        session.get(Job, job_id).state = "done"  # type: ignore[union-attr]
        session.add(RetrainRun(id=job_id, job_id=job_id, created_at=datetime.now(UTC), state="refused",
                               report={}, path=""))  # fmt: skip
    assert queue.weekly_retrain() is None
    with transaction(server.sessions) as session:
        session.get(RetrainRun, job_id).state = "failed"  # type: ignore[union-attr]
    assert queue.weekly_retrain() is not None and len(retrain_jobs(server)) == 2


def test_a_worker_that_finds_the_check_locked_queues_nothing(server: Server) -> None:
    server.settings.retrain_min_new_labels = 1
    queue = JobQueue(server.settings, server.sessions)
    with transaction(server.sessions) as session:
        label_crops(session, ["d1"], "jaguar", "ada")
    with queue.huey.lock_task("weekly_retrain"):  # another worker is checking right now
        assert queue.weekly_retrain() is None
    assert retrain_jobs(server) == []
    assert queue.weekly_retrain() is not None
