"""Retention: what the server deletes once it is old enough (settings `*_retention_days`).

Dead letters (30 days by default), finished jobs with their ZIP files (7 days) and expired
dashboard sessions go; pictures only when `media_retention_days` is set (they are the survey's
evidence). The job worker applies it periodically; `trapline server retention` applies it now.
A picture file is removed only when no remaining row links to it (files are content-addressed and
shared).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.models import DeadLetter, Job, Media, WebSession

log = logging.getLogger(__name__)

FINISHED_JOB_STATES = ("done", "failed")
_BATCH = 1000  # rows per delete, so a first run over a year of data stays a series of short transactions


@dataclass(frozen=True)
class RetentionResult:
    dead_letters: int = 0
    jobs: int = 0
    job_files: int = 0
    media_rows: int = 0
    media_files: int = 0
    sessions: int = 0


def _cutoff(now: datetime, days: float) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


def _delete_dead_letters(sessions: sessionmaker[Session], before: datetime) -> int:
    total = 0
    while True:
        with transaction(sessions) as session:
            ids = list(
                session.scalars(select(DeadLetter.id).where(DeadLetter.received_at < before).limit(_BATCH))
            )
            if ids:
                session.execute(delete(DeadLetter).where(DeadLetter.id.in_(ids)))
        total += len(ids)
        if len(ids) < _BATCH:
            return total


def _delete_jobs(sessions: sessionmaker[Session], jobs_dir: Path, before: datetime) -> tuple[int, int]:
    files = 0
    with transaction(sessions) as session:
        old = list(
            session.scalars(select(Job).where(Job.state.in_(FINISHED_JOB_STATES), Job.updated_at < before))
        )
        for job in old:
            if job.result_path:
                path = Path(job.result_path)
                # only files the server wrote itself
                if path.parent == jobs_dir and path.exists():
                    path.unlink()
                    files += 1
            session.delete(job)
    return len(old), files


def _delete_media(sessions: sessionmaker[Session], media_dir: Path, before: datetime) -> tuple[int, int]:
    rows = files = 0
    while True:
        with transaction(sessions) as session:
            old = list(session.scalars(select(Media).where(Media.uploaded_at < before).limit(_BATCH)))
            digests = {m.sha256 for m in old}
            for item in old:
                session.delete(item)
            session.flush()
            still_linked = set(session.scalars(select(Media.sha256).where(Media.sha256.in_(digests))))
        for digest in digests - still_linked:
            path = media_dir / digest[:2] / digest
            if path.exists():
                path.unlink()
                files += 1
        rows += len(old)
        if len(old) < _BATCH:
            return rows, files


def apply_retention(
    settings: ServerSettings, sessions: sessionmaker[Session], now: datetime | None = None
) -> RetentionResult:
    now = now or datetime.now(UTC)
    dead = jobs = job_files = media_rows = media_files = 0
    if (before := _cutoff(now, settings.dead_letter_retention_days)) is not None:
        dead = _delete_dead_letters(sessions, before)
    if (before := _cutoff(now, settings.job_retention_days)) is not None:
        jobs, job_files = _delete_jobs(sessions, settings.jobs_dir, before)
    if (before := _cutoff(now, settings.media_retention_days)) is not None:
        media_rows, media_files = _delete_media(sessions, settings.media_dir, before)
    with transaction(sessions) as session:
        expired = session.execute(delete(WebSession).where(WebSession.expires_at <= now))
        session_count = int(getattr(expired, "rowcount", 0) or 0)
    result = RetentionResult(dead, jobs, job_files, media_rows, media_files, session_count)
    log.info("retention: %s", result)
    return result
