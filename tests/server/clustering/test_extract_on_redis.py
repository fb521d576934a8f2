"""The several-machine setup for real: a Redis task queue, PostgreSQL, and two `trapline server
worker` processes sharing one feature-extraction job; one of them is killed (-9) holding a chunk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from tests.server.clustering.conftest import Fleet, load_fleet
from tests.server.conftest import settings_for
from tests.support.postgres import TemporaryPostgres
from tests.support.redis import TemporaryRedis, available
from trapline.server.clustering.extract import ExtractionParams, feature_space
from trapline.server.clustering.store import FeatureStore
from trapline.server.db import make_engine, session_factory
from trapline.server.jobs import JobQueue
from trapline.server.migrate import upgrade
from trapline.server.models import Job, WorkChunk

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")

LEASE_S = 3.0
PARAMS = {"extractor": "yolo-backbone", "runtime": "onnxruntime", "greyscale": False}


@pytest.fixture
def redis_server() -> Iterator[TemporaryRedis]:
    with TemporaryRedis() as server:
        yield server


@pytest.fixture
def shared_fleet(
    postgres: TemporaryPostgres, redis_server: TemporaryRedis, tmp_path: Path
) -> Iterator[Fleet]:
    """The fleet's photos in PostgreSQL, jobs on Redis: what workers on several machines share."""
    url = postgres.create_database("redis_workers")
    upgrade(url)
    settings = settings_for(url, tmp_path, task_queue=redis_server.url, clustering_min_conf=0.5,
                            feature_chunk_size=3, feature_batch_size=3, feature_extractor="yolo-backbone",
                            work_lease_s=LEASE_S)  # fmt: skip
    engine = make_engine(url)
    yield load_fleet(settings, session_factory(engine))
    engine.dispose()


def start_worker(fleet: Fleet, log: Path) -> subprocess.Popen[bytes]:
    s = fleet.settings
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRAPLINE_SERVER_DATABASE_URL": s.database_url,
           "TRAPLINE_SERVER_DATA_DIR": str(s.data_dir), "TRAPLINE_SERVER_TASK_QUEUE": s.task_queue,
           "TRAPLINE_SERVER_CLUSTERING_MIN_CONF": "0.5", "TRAPLINE_SERVER_FEATURE_CHUNK_SIZE": "3",
           "TRAPLINE_SERVER_FEATURE_BATCH_SIZE": "3", "TRAPLINE_SERVER_WORK_LEASE_S": str(LEASE_S)}  # fmt: skip
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "server", "worker"], env=env, stdout=handle, stderr=handle
        )


def wait_until(predicate: object, timeout_s: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout_s} s\n" + "\n".join(p.read_text()[-3000:] for p in logs))


def chunks(fleet: Fleet, job_id: str) -> list[WorkChunk]:
    with fleet.sessions() as session:
        return list(session.scalars(select(WorkChunk).where(WorkChunk.job_id == job_id)))


@pytest.mark.slow
def test_two_workers_share_a_job_and_a_killed_one_loses_nothing(shared_fleet: Fleet, tmp_path: Path) -> None:
    fleet = shared_fleet
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [start_worker(fleet, log) for log in logs]
    names = {w.pid: f"{socket.gethostname()}:{w.pid}" for w in workers}
    try:
        wait_until(
            lambda: all("consumer started" in p.read_text() for p in logs), 60, "workers started", logs
        )
        job_id = JobQueue(fleet.settings, fleet.sessions).enqueue("extract_features", PARAMS, parallel=2)

        # freeze a worker that has finished a chunk while it holds the lease of another, then kill it
        victim: subprocess.Popen[bytes] | None = None
        held: WorkChunk | None = None
        deadline = time.monotonic() + 90
        while victim is None and time.monotonic() < deadline:
            for worker in workers:
                mine = [c for c in chunks(fleet, job_id) if c.worker == names[worker.pid]]
                if any(c.state == "done" for c in mine) and any(c.state == "running" for c in mine):
                    os.kill(worker.pid, signal.SIGSTOP)
                    running = [c for c in chunks(fleet, job_id)
                               if c.worker == names[worker.pid] and c.state == "running"]  # fmt: skip
                    if running:  # still holding it while frozen: it dies holding it
                        os.kill(worker.pid, signal.SIGKILL)
                        worker.wait(10)
                        victim, held = worker, running[0]
                        break
                    os.kill(worker.pid, signal.SIGCONT)  # it finished in between: try again
            time.sleep(0.02)
        assert victim is not None and held is not None, "no worker was caught holding a chunk"
        survivor = next(w for w in workers if w is not victim)

        def job_done() -> bool:
            with fleet.sessions() as session:
                job = session.get(Job, job_id)
                return job is not None and job.state in ("done", "failed")

        wait_until(job_done, 120, "the survivor finished the job", logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(20)

    with fleet.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == "done", job.message if job else None
    final = chunks(fleet, job_id)
    assert final and all(c.state == "done" for c in final)
    assert {c.worker for c in final} == set(names.values())  # both workers did some
    taken_over = next(c for c in final if c.id == held.id)
    assert taken_over.worker == names[survivor.pid] and taken_over.attempts == 2
    assert "taken over" in logs[workers.index(survivor)].read_text()

    # every crop exactly once: one row per crop across the chunk files, and all of them there
    space = feature_space(fleet.settings, ExtractionParams.from_job(PARAMS))
    store = FeatureStore(fleet.settings.learning_dir / "features", space)
    keys = [
        k for path in sorted(store.folder.glob("*.parquet")) for k in pq.read_table(path)["key"].to_pylist()
    ]
    assert len(keys) == len(set(keys)) == fleet.boxes
    assert len(store.load()) == fleet.boxes
