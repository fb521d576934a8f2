"""Feature extraction on real photos: every crop once, failures as data, resumable, incremental."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.server.clustering.conftest import THUMBNAIL_SUBSET, Fleet
from trapline.server.clustering.extract import ExtractionParams, feature_space, work_on
from trapline.server.clustering.store import FeatureStore
from trapline.server.db import transaction
from trapline.server.models import Job, Media, WorkChunk


def add_job(fleet: Fleet, job_id: str, **params: object) -> str:
    now = datetime.now(UTC)
    with transaction(fleet.sessions) as session:
        session.add(Job(id=job_id, kind="extract_features", params={"extractor": "yolo-backbone", **params},
                        state="queued", progress=0.0, created_at=now, updated_at=now))  # fmt: skip
    return job_id


def store_of(fleet: Fleet, **params: object) -> FeatureStore:
    space = feature_space(fleet.settings, ExtractionParams.from_job({"extractor": "yolo-backbone", **params}))
    return FeatureStore(fleet.settings.learning_dir / "features", space)


def test_every_crop_is_extracted_once_with_its_source(fleet: Fleet, tmp_path: Path) -> None:
    assert work_on(fleet.settings, fleet.sessions, add_job(fleet, "job-1")) == fleet.boxes
    table = store_of(fleet).load()
    assert len(table) == fleet.boxes and len(set(table.keys)) == fleet.boxes
    assert table.features.shape == (fleet.boxes, 448) and np.isfinite(table.features).all()
    by_device = {
        (d, k, low)
        for d, k, low in zip(table.meta["device_id"], table.meta["source_kind"], table.meta["low_resolution"], strict=True)
    }  # fmt: skip
    assert by_device == {
        ("trap-jaguar", "frame", False), ("trap-buow", "frame", False),
        (f"trap-{THUMBNAIL_SUBSET}", "thumbnail", True),
    }  # fmt: skip
    with fleet.sessions() as session:
        job = session.get(Job, "job-1")
        assert job is not None and job.state == "done" and job.progress == 1.0
    lines = [json.loads(line) for line in (store_of(fleet).iter_jsonl())]
    assert len(lines) == fleet.boxes and len(lines[0]["feature"]) == 448
    # incremental: nothing new, nothing to do
    assert work_on(fleet.settings, fleet.sessions, add_job(fleet, "job-2")) == 0


def test_a_missing_picture_is_recorded_and_retried_by_the_next_run(fleet: Fleet) -> None:
    with fleet.sessions() as session:
        media = session.scalars(select(Media).where(Media.device_id == "trap-jaguar").limit(1)).one()
    path = fleet.settings.media_dir / media.sha256[:2] / media.sha256
    saved = path.read_bytes()
    path.unlink()
    work_on(fleet.settings, fleet.sessions, add_job(fleet, "job-1"))
    table = store_of(fleet).load()
    assert len(table.failures) >= 1 and "missing" in next(iter(table.failures.values()))
    assert len(table) + len(table.failures) == fleet.boxes
    path.write_bytes(saved)
    retried = work_on(fleet.settings, fleet.sessions, add_job(fleet, "job-2"))
    assert retried == len(table.failures)
    after = store_of(fleet).load()
    assert len(after) == fleet.boxes and not after.failures


class Killed(BaseException):
    """Stands in for the worker being killed between two chunks."""


def test_a_killed_job_resumes_without_doing_a_chunk_twice(fleet: Fleet) -> None:
    done: list[int] = []

    def die_after_two(chunk: WorkChunk) -> None:
        done.append(chunk.index)
        if len(done) == 2:
            raise Killed

    with pytest.raises(Killed):
        work_on(fleet.settings, fleet.sessions, add_job(fleet, "job-1"), on_chunk=die_after_two)
    assert len(store_of(fleet).load()) == 2 * fleet.settings.feature_chunk_size
    rest = work_on(fleet.settings, fleet.sessions, "job-1", on_chunk=lambda c: done.append(c.index))
    assert rest == fleet.boxes - 2 * fleet.settings.feature_chunk_size
    assert sorted(done) == list(range(len(done)))  # each chunk once
    assert len(store_of(fleet).load()) == fleet.boxes
