"""The weekly retraining: queued on Monday 03:00 UTC only when enough labels arrived since the last
retraining, never twice (a retraining queued or running, several workers' schedulers)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from tests.server.clustering.conftest import Fleet
from trapline.server.db import transaction
from trapline.server.jobs import JobQueue
from trapline.server.learning.labels import label_crops
from trapline.server.models import Detection, Job, RetrainRun


def retrain_jobs(fleet: Fleet) -> list[Job]:
    with fleet.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "retrain")))


def test_the_weekly_check_queues_a_retraining_only_when_enough_labels_are_new(fleet: Fleet) -> None:
    fleet.settings.retrain_min_new_labels = 5
    queue = JobQueue(fleet.settings, fleet.sessions)
    due_at = [t.name for t in queue.huey.read_periodic(datetime(2026, 11, 30, 3, 0))]  # a Monday
    assert due_at == ["weekly_retrain"]
    assert queue.huey.read_periodic(datetime(2026, 11, 30, 4, 0)) == []
    assert queue.huey.read_periodic(datetime(2026, 12, 1, 3, 0)) == []
    with fleet.sessions() as session:
        boxes = [f"d{i}" for i in session.scalars(select(Detection.id).order_by(Detection.id))]

    with transaction(fleet.sessions) as session:
        label_crops(session, boxes[:4], "jaguar", "ada")
    assert queue.weekly_retrain() is None and retrain_jobs(fleet) == []  # 4 < 5

    with transaction(fleet.sessions) as session:
        label_crops(session, boxes[4:5], "ocelot", "ada")
    job_id = queue.weekly_retrain()
    (job,) = retrain_jobs(fleet)
    assert job.id == job_id and job.state == "queued" and job.params["trigger"] == "schedule"
    assert "5 new label(s)" in job.params["why"]
    assert queue.weekly_retrain() is None and len(retrain_jobs(fleet)) == 1  # already queued

    # it ran to a verdict: the labels before it are used up; a failed run would not use them up
    with transaction(fleet.sessions) as session:
        session.get(Job, job_id).state = "done"  # type: ignore[union-attr]
        session.add(RetrainRun(id=job_id, job_id=job_id, created_at=datetime.now(UTC), state="refused",
                               report={}, path=""))  # fmt: skip
    assert queue.weekly_retrain() is None
    with transaction(fleet.sessions) as session:
        session.get(RetrainRun, job_id).state = "failed"  # type: ignore[union-attr]
    assert queue.weekly_retrain() is not None and len(retrain_jobs(fleet)) == 2


def test_a_worker_that_finds_the_check_locked_queues_nothing(fleet: Fleet) -> None:
    fleet.settings.retrain_min_new_labels = 1
    queue = JobQueue(fleet.settings, fleet.sessions)
    with transaction(fleet.sessions) as session:
        label_crops(session, ["d1"], "jaguar", "ada")
    with queue.huey.lock_task("weekly_retrain"):  # another worker is checking right now
        assert queue.weekly_retrain() is None
    assert retrain_jobs(fleet) == []
    assert queue.weekly_retrain() is not None
