"""Background jobs on Huey: SQLite storage by default (one machine, nothing to set up), Redis
when workers run on other machines (`TRAPLINE_SERVER_TASK_QUEUE=redis://...`).

Huey runs the work; the `jobs` table is what users see (state, progress, result, failure). A job
left "running" by a worker that died is queued again when a worker starts: jobs are idempotent
(a dataset ZIP is rebuilt from scratch and replaced atomically).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from huey import Huey, RedisHuey, SqliteHuey, crontab
from huey.exceptions import TaskLockedException
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import CATEGORIES
from trapline.server.core.config import ServerSettings
from trapline.server.db import make_engine, session_factory, transaction
from trapline.server.models import DetectionFrame, Job, WorkChunk
from trapline.server.queries import boxes_by_frame, frame_query, media_by_frame, picture
from trapline.server.retention import apply_retention

log = logging.getLogger(__name__)


def make_queue(settings: ServerSettings) -> Huey:
    if settings.task_queue.startswith("redis://"):
        return RedisHuey("trapline", url=settings.task_queue)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("trapline", filename=str(settings.data_dir / "tasks.sqlite"))


def _update(sessions: sessionmaker[Session], job_id: str, **values: Any) -> None:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        for key, value in values.items():
            setattr(job, key, value)
        job.updated_at = datetime.now(UTC)


REVIEWED_COLUMNS = (
    "image", "crop_key", "category", "conf", "bbox_x", "bbox_y", "bbox_width", "bbox_height", "label",
    "in_labels_file", "labelled_by", "labelled_at",
)  # fmt: skip


def build_dataset_zip(settings: ServerSettings, sessions: sessionmaker[Session], job_id: str) -> Path:
    """A YOLO dataset (images, labels, data.yaml) of the frames matching the job's filters, with the
    reviewers' labels: `reviewed.csv` names the species of each reviewed box; a box labelled "not
    an animal" is left out of the YOLO labels (a hard negative: that place is background); labelled
    below-threshold candidate crops travel in `candidates/`."""
    from trapline.server.learning.labels import NOT_AN_ANIMAL, reviewed_frames

    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        params = dict(job.params)
    _update(sessions, job_id, state="running", progress=0.0, message=None)
    since = datetime.fromisoformat(params["since"]) if params.get("since") else None
    until = datetime.fromisoformat(params["until"]) if params.get("until") else None
    query = frame_query(params.get("device_id"), params.get("category"), since, until, params.get("min_conf"))
    with sessions() as session:
        frames = list(session.scalars(query.order_by(DetectionFrame.captured_at)))
        boxes = boxes_by_frame(session, [f.id for f in frames])
        pictures = {
            frame_id: picture(kinds)
            for frame_id, kinds in media_by_frame(session, [f.id for f in frames]).items()
        }
        reviewed = reviewed_frames(session, boxes)
    out_dir = settings.jobs_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{job_id}.zip"
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".zip.part")
    written = skipped = negatives = 0
    review_rows: list[dict[str, Any]] = []

    def review_row(image: str, key: str, label: Any, box: Any, kept: bool) -> dict[str, Any]:
        row = {"image": image, "crop_key": key, "label": label.label, "in_labels_file": "no",
               "labelled_by": label.labelled_by, "labelled_at": label.labelled_at.isoformat()}  # fmt: skip
        if kept:
            row["in_labels_file"] = "yes"
        if box is not None:  # a candidate crop's box is not known here
            row |= {"category": box.category, "conf": box.conf, "bbox_x": box.x, "bbox_y": box.y,
                    "bbox_width": box.w, "bbox_height": box.h}  # fmt: skip
        return row

    with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, frame in enumerate(frames):
            media = pictures.get(frame.id)
            path = settings.media_dir / media.sha256[:2] / media.sha256 if media else None
            stem = frame.id.replace(":", "_")
            if media is None or path is None or not path.exists():
                skipped += 1
            else:
                image = f"images/train/{stem}.jpg"
                archive.write(path, image)
                lines = []
                for det in boxes.get(frame.id, []):
                    label = reviewed.boxes.get(det.id)
                    kept = det.category in CATEGORIES and not (label and label.label == NOT_AN_ANIMAL)
                    if label is not None:
                        review_rows.append(review_row(image, f"d{det.id}", label, det, kept))
                        negatives += label.label == NOT_AN_ANIMAL
                    if kept:
                        lines.append(
                            f"{CATEGORIES.index(det.category)}"  # type: ignore[arg-type,unused-ignore]
                            f" {det.x + det.w / 2:.6f} {det.y + det.h / 2:.6f} {det.w:.6f} {det.h:.6f}"
                        )
                archive.writestr(f"labels/train/{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
                written += 1
            for crop, label in reviewed.candidates.get(frame.id, []):
                crop_path = settings.media_dir / crop.sha256[:2] / crop.sha256
                if crop_path.exists():
                    name = f"candidates/{stem}-m{crop.id}.jpg"
                    archive.write(crop_path, name)
                    review_rows.append(review_row(name, f"m{crop.id}", label, None, False))
            if index % 20 == 0:
                _update(sessions, job_id, progress=round(index / max(len(frames), 1), 3))
        data = {
            "path": ".",
            "train": "images/train",
            "val": "images/train",
            "names": dict(enumerate(CATEGORIES)),
        }
        archive.writestr("data.yaml", yaml.safe_dump(data, sort_keys=False))
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=REVIEWED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(review_rows)
        archive.writestr("reviewed.csv", table.getvalue())
        readme = io.StringIO()
        readme.write(f"Trapline dataset export {job_id}\nfilters: {params}\n")
        readme.write(f"{written} frames with pictures; {skipped} matching frames had no uploaded picture\n")
        readme.write(
            f"reviewed.csv: {len(review_rows)} reviewers' labels (species, 'not an animal' or 'unsure', who"
            f" and when; bbox as [x_min, y_min, width, height], 0-1); {negatives} box(es) labelled 'not an"
            " animal' are left out of labels/ (hard negatives); labelled below-threshold candidate crops"
            " are in candidates/\n"
        )
        archive.writestr("README.txt", readme.getvalue())
    os.replace(tmp, target)
    message = f"{written} frames, {skipped} without pictures, {len(review_rows)} reviewed labels"
    _update(sessions, job_id, state="done", progress=1.0, result_path=str(target), message=message)
    return target


class JobQueue:
    """The task queue with its tasks, built once per process: the API enqueues, workers run."""

    def __init__(self, settings: ServerSettings, sessions: sessionmaker[Session] | None = None) -> None:
        self.settings = settings
        self.sessions = sessions or session_factory(make_engine(settings.database_url))
        self.huey = make_queue(settings)
        self.dataset_zip = self.huey.task(retries=1, retry_delay=5, name="dataset_zip")(self._dataset_zip)
        # the learning loop: a job kind -> its task (extraction is split across workers by chunks)
        self.tasks: dict[str, Any] = {
            "dataset_zip": self.dataset_zip,
            "extract_features": self.huey.task(name="extract_features")(self._guarded(self._extract)),
            "cluster": self.huey.task(name="cluster")(self._guarded(self._cluster)),
            "retrain": self.huey.task(name="retrain")(self._guarded(self._retrain)),
            "ignore_regions": self.huey.task(retries=3, retry_delay=30, name="ignore_regions")(
                self._guarded(self._ignore_regions)
            ),
        }
        # one lock object, made now so a starting worker clears a lock a killed worker left behind
        # (SQLite storage has no expiring keys; Redis expires it too)
        self.weekly_lock = self.huey.lock_task(
            "weekly_retrain", ttl=600 if isinstance(self.huey, RedisHuey) else None
        )
        self.huey.periodic_task(crontab(day_of_week="1", hour="3", minute="0"), name="weekly_retrain")(
            self._weekly_retrain_task
        )
        self.retention = self.huey.periodic_task(self._retention_due, name="retention")(self._retention)

    def _retention_due(self, when: datetime) -> bool:
        # Huey asks once a minute
        return (when.hour * 60 + when.minute) % self.settings.retention_interval_minutes == 0

    def _retention(self) -> None:
        apply_retention(self.settings, self.sessions)

    def _guarded(self, work: Callable[[str], object]) -> Callable[[str], str]:
        def run(job_id: str) -> str:
            try:
                work(job_id)
                return job_id
            except Exception as exc:  # recorded for the user; the job is failed, not retried forever
                log.exception("job %s failed", job_id)
                _update(self.sessions, job_id, state="failed", message=f"{type(exc).__name__}: {exc}"[:1000])
                raise

        return run

    def _extract(self, job_id: str) -> None:
        from trapline.server.clustering.extract import work_on

        work_on(self.settings, self.sessions, job_id)

    def _cluster(self, job_id: str) -> None:
        from trapline.server.clustering.run import run_clustering_job

        run_clustering_job(self.settings, self.sessions, job_id)

    def _retrain(self, job_id: str) -> None:
        from trapline.server.learning.retrain import run_retrain_job

        run_retrain_job(self.settings, self.sessions, job_id)

    def _ignore_regions(self, job_id: str) -> None:
        from trapline.server.learning.negatives import run_ignore_regions_job

        run_ignore_regions_job(self.settings, self.sessions, job_id)

    def _weekly_retrain_task(self) -> None:
        self.weekly_retrain()  # no result stored: nobody reads a periodic task's result

    def weekly_retrain(self) -> str | None:
        """The weekly check; the retraining job's id when it queued one. Every worker's scheduler
        fires it at the same minute: a lock in the queue's storage lets one worker check at a time,
        and a retraining already queued or running makes the check say no."""
        from trapline.server.learning.retrain import retraining_due

        try:
            with self.weekly_lock:
                due, why = retraining_due(self.settings, self.sessions)
                log.info("weekly retraining check: %s", why)
                return self.enqueue("retrain", {"trigger": "schedule", "why": why}) if due else None
        except TaskLockedException:
            log.info("weekly retraining check: another worker is checking")
            return None

    def enqueue(self, kind: str, params: dict[str, Any], parallel: int = 1) -> str:
        """Record a job and queue it; `parallel` tasks let that many workers share it (extraction)."""
        if kind not in self.tasks:
            raise ValueError(f"unknown job kind {kind!r}")
        job_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with transaction(self.sessions) as session:
            session.add(Job(id=job_id, kind=kind, params=params, state="queued", progress=0.0,
                            created_at=now, updated_at=now))  # fmt: skip
        for _ in range(parallel):
            self.tasks[kind](job_id)
        return job_id

    def _dataset_zip(self, job_id: str) -> str:
        try:
            return str(build_dataset_zip(self.settings, self.sessions, job_id))
        except Exception as exc:  # recorded for the user, then re-raised for Huey's retry
            log.exception("job %s failed", job_id)
            _update(self.sessions, job_id, state="failed", message=f"{type(exc).__name__}: {exc}"[:1000])
            raise

    def enqueue_dataset(self, params: dict[str, Any]) -> str:
        job_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with transaction(self.sessions) as session:
            session.add(Job(id=job_id, kind="dataset_zip", params=params, state="queued", progress=0.0,
                            created_at=now, updated_at=now))  # fmt: skip
        self.dataset_zip(job_id)
        return job_id

    def recover(self) -> int:
        """Queue again the jobs a dead worker left unfinished; returns how many."""
        pending = {t.args[0] for t in self.huey.pending() if t.args}
        with transaction(self.sessions) as session:
            # a worker that died while planning an extraction: plan it again from scratch
            for job in session.scalars(select(Job).where(Job.state == "planning")):
                session.execute(delete(WorkChunk).where(WorkChunk.job_id == job.id))
                job.state = "queued"
        with self.sessions() as session:
            unfinished = session.execute(
                select(Job.id, Job.kind).where(Job.state.in_(("queued", "running")))
            ).all()
            stuck = [(job_id, kind) for job_id, kind in unfinished if job_id not in pending]
        for job_id, kind in stuck:
            log.warning("job %s was left unfinished by a stopped worker; queueing it again", job_id)
            self.tasks.get(kind, self.dataset_zip)(job_id)
        return len(stuck)

    def run_worker(self, workers: int = 1, periodic: bool = True) -> None:
        self.recover()
        self.huey.create_consumer(workers=workers, periodic=periodic, flush_locks=True).run()
