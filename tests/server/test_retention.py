"""Retention: old dead letters, finished jobs with their ZIPs, expired sessions and (when set)
old pictures are deleted; everything recent, unfinished or still linked stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.server.conftest import register, settings_for
from trapline.server.api.routes.media import media_path, store_bytes
from trapline.server.db import transaction
from trapline.server.jobs import JobQueue
from trapline.server.models import ApiToken, DeadLetter, Job, Media, WebSession
from trapline.server.retention import apply_retention


def _count(sessions: Any, model: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_retention_deletes_only_what_is_old_enough(
    database_url: str, tmp_path: Path, sessions_for: Any
) -> None:
    settings = settings_for(database_url, tmp_path, media_retention_days=365)
    sessions = sessions_for(database_url)
    register(sessions, "trap-01")
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=1)
    settings.jobs_dir.mkdir(parents=True)
    shared, lonely, fresh = (
        store_bytes(settings.media_dir, b"\xff\xd8\xff" + bytes([n]) * 100)[0] for n in (1, 2, 3)
    )
    with transaction(sessions) as session:
        for when, n in ((old, 1), (old, 2), (recent, 3)):
            session.add(
                DeadLetter(
                    topic="t", reason="r", payload=b"x", payload_bytes=1, received_at=when, digest=str(n)
                )
            )
        for job_id, state, when in (
            ("old-done", "done", old),
            ("old-failed", "failed", old),
            ("old-running", "running", old),
            ("new-done", "done", recent),
        ):
            path = settings.jobs_dir / f"{job_id}.zip"
            path.write_bytes(b"PK")
            session.add(
                Job(
                    id=job_id,
                    kind="dataset_zip",
                    params={},
                    state=state,
                    progress=1.0,
                    result_path=str(path),
                    created_at=when,
                    updated_at=when,
                )
            )
        for sha, when, frame in (
            (shared, old, "trap-01:1"),
            (shared, recent, "trap-01:2"),
            (lonely, old, "trap-01:3"),
            (fresh, recent, "trap-01:4"),
        ):
            session.add(
                Media(
                    sha256=sha,
                    device_id="trap-01",
                    kind="thumbnail",
                    detection_id=frame,
                    content_type="image/jpeg",
                    bytes=103,
                    uploaded_at=when,
                )
            )
        token = ApiToken(name="ada", token_hash="h", role="admin", created_at=old)
        session.add(token)
        session.flush()
        session.add(
            WebSession(
                id_hash="expired", token_id=token.id, created_at=old, expires_at=now - timedelta(hours=1)
            )
        )
        session.add(
            WebSession(
                id_hash="valid", token_id=token.id, created_at=now, expires_at=now + timedelta(hours=1)
            )
        )
    # fmt: skip

    result = apply_retention(settings, sessions, now)

    assert (result.dead_letters, result.jobs, result.job_files) == (2, 2, 2)
    assert (result.media_rows, result.media_files, result.sessions) == (2, 1, 1)
    with sessions() as session:
        assert set(session.scalars(select(DeadLetter.digest))) == {"3"}
        assert set(session.scalars(select(Job.id))) == {"old-running", "new-done"}
        assert set(session.scalars(select(WebSession.id_hash))) == {"valid"}
        assert sorted(session.scalars(select(Media.detection_id))) == ["trap-01:2", "trap-01:4"]
    assert sorted(p.name for p in settings.jobs_dir.iterdir()) == ["new-done.zip", "old-running.zip"]
    assert media_path(settings.media_dir, shared).exists()  # still linked by a recent row
    assert not media_path(settings.media_dir, lonely).exists()
    assert media_path(settings.media_dir, fresh).exists()
    # pictures are kept by default
    assert settings_for(database_url, tmp_path).media_retention_days == 0
    again = apply_retention(settings_for(database_url, tmp_path), sessions, now + timedelta(days=3000))
    assert again.media_rows == 0 and _count(sessions, Media) == 2


def test_the_job_worker_applies_retention_periodically(sqlite_url: str, tmp_path: Path) -> None:
    queue = JobQueue(settings_for(sqlite_url, tmp_path, retention_interval_minutes=60))
    periodic = {task.name for task in queue.huey._registry.periodic_tasks}  # noqa: SLF001
    assert "retention" in {name.split(".")[-1] for name in periodic}
    assert queue._retention_due(datetime(2026, 11, 22, 5, 0))  # noqa: SLF001
    assert not queue._retention_due(datetime(2026, 11, 22, 5, 30))  # noqa: SLF001
