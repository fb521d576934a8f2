"""Feature extraction as a job: planned once, cut into chunks, worked on by any number of workers.

The first worker to pick the job up plans it: every eligible crop whose feature is not stored yet
(incremental: a new run extracts only what is new, and retries earlier failures), split into
chunks of `feature_chunk_size`. Workers then claim chunks under a lease, extract in batches
(renewing the lease), and write each chunk's Parquet file atomically before marking it done. A
worker that dies leaves its lease to expire and another worker takes the chunk over; a killed job
run again skips every chunk already done. No crop is lost and none is stored twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from trapline.model_source import resolve_model
from trapline.server.clustering.crops import CropError, to_greyscale
from trapline.server.clustering.extractors import FeatureExtractor, make_extractor
from trapline.server.clustering.items import CropItem, PictureFinder, eligible_keys, load_items
from trapline.server.clustering.store import FeatureRow, FeatureStore
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.models import Job, WorkChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionParams:
    extractor: str = "resnet152"
    runtime: str = "onnxruntime"
    greyscale: bool = False
    random_seed: int | None = None  # ResNet-152 with random weights: tests of the mechanics only

    @classmethod
    def from_job(cls, params: dict[str, Any]) -> ExtractionParams:
        return cls(
            extractor=str(params.get("extractor", "resnet152")),
            runtime=str(params.get("runtime", "onnxruntime")),
            greyscale=bool(params.get("greyscale", False)),
            random_seed=params.get("random_seed"),
        )


def feature_space(settings: ServerSettings, params: ExtractionParams) -> str:
    """The name features of these params are kept under (computed without loading a model)."""
    if params.extractor == "yolo-backbone":
        model = resolve_model(settings.inference_model, settings.release_keyring)
        base = f"yolo-backbone-{model.sha256[:12]}"
    elif params.random_seed is not None:
        base = f"resnet152-random{params.random_seed}"
    else:
        base = "resnet152"
    return base + ("-grey" if params.greyscale else "")


def _job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    return job


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


def plan(settings: ServerSettings, sessions: sessionmaker[Session], job_id: str) -> bool:
    """Create the job's chunks, once: only the worker that moves the job from queued to planning
    plans it. Returns True when this worker planned it."""
    with transaction(sessions) as session:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="planning", updated_at=_now())
        ).rowcount  # type: ignore[attr-defined]
        if won != 1:
            return False
        params = ExtractionParams.from_job(_job(session, job_id).params)
    store = FeatureStore(settings.learning_dir / "features", feature_space(settings, params))
    with sessions() as session:
        eligible = eligible_keys(session, settings.clustering_min_conf)
    done = store.done_keys()
    todo = [k for k in eligible if k not in done]
    size = settings.feature_chunk_size
    with transaction(sessions) as session:
        for index, start in enumerate(range(0, len(todo), size)):
            session.add(
                WorkChunk(job_id=job_id, index=index, items=todo[start : start + size], state="pending")
            )
        job = _job(session, job_id)
        job.state = "running"
        job.params = {**job.params, "space": store.space, "crops": len(todo), "already_done": len(done)}
        job.message = f"{len(todo)} crops to extract ({len(done)} already have features)"
        job.updated_at = _now()
    log.info(
        "job %s: %d crops in %d chunks (%d done before)", job_id, len(todo), -(-len(todo) // size), len(done)
    )
    return True


def claim(sessions: sessionmaker[Session], job_id: str, worker: str, lease_s: float) -> WorkChunk | None:
    """A pending chunk, or one whose lease ran out; None when there is none to take now."""
    now = _now()
    claimable = or_(
        WorkChunk.state == "pending", and_(WorkChunk.state == "running", WorkChunk.lease_until < now)
    )
    with sessions() as session:
        ids = list(
            session.scalars(
                select(WorkChunk.id)
                .where(WorkChunk.job_id == job_id, claimable)
                .order_by(WorkChunk.index)
                .limit(8)
            )
        )
    for chunk_id in ids:
        with transaction(sessions) as session:
            taken = session.execute(
                update(WorkChunk)
                .where(WorkChunk.id == chunk_id, claimable)
                .values(
                    state="running",
                    worker=worker,
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=WorkChunk.attempts + 1,
                )
            ).rowcount  # type: ignore[attr-defined]
            if taken == 1:
                chunk = session.get(WorkChunk, chunk_id)
                if chunk is not None and chunk.attempts > 1:
                    log.warning("chunk %d of job %s taken over by %s", chunk.index, job_id, worker)
                return chunk
    return None


def renew(sessions: sessionmaker[Session], chunk_id: int, worker: str, lease_s: float) -> bool:
    """Extend this worker's lease; False when another worker has taken the chunk over."""
    with transaction(sessions) as session:
        return bool(
            session.execute(
                update(WorkChunk)
                .where(WorkChunk.id == chunk_id, WorkChunk.worker == worker, WorkChunk.state == "running")
                .values(lease_until=_now() + timedelta(seconds=lease_s))
            ).rowcount  # type: ignore[attr-defined]
        )


def _row(item: CropItem, failure: str | None, cut: Any = None) -> FeatureRow:
    return FeatureRow(
        key=item.key, detection_id=item.detection_id, media_id=item.media_id, frame_id=item.frame_id,
        device_id=item.device_id, captured_at=item.captured_at, night=item.night, category=item.category,
        conf=item.conf, source_kind=cut.source_kind if cut else None,
        source_width=cut.source_width if cut else None, source_height=cut.source_height if cut else None,
        low_resolution=cut.low_resolution if cut else None, failure=failure,
    )  # fmt: skip


def extract_chunk(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    chunk: WorkChunk,
    extractor: FeatureExtractor,
    params: ExtractionParams,
    worker: str,
) -> int | None:
    """Extract one chunk and store it; the number of crops, or None when the lease was lost."""
    with sessions() as session:
        items = load_items(session, chunk.items)
        pictures = PictureFinder(session, settings.media_dir, items)
    rows: list[FeatureRow] = []
    features: list[np.ndarray | None] = []
    batch = settings.feature_batch_size
    for start in tqdm(range(0, len(items), batch), desc=f"chunk {chunk.index}", unit="batch", leave=False):
        ready: list[tuple[CropItem, Any]] = []
        for item in items[start : start + batch]:
            try:
                cut = pictures.cut(item)
            except CropError as exc:  # recorded as data, never a crashed job
                rows.append(_row(item, str(exc)))
                features.append(None)
                continue
            ready.append((item, cut))
        if ready:
            pixels = np.stack([to_greyscale(c.pixels) if params.greyscale else c.pixels for _, c in ready])
            out = extractor.extract(pixels)
            for (item, cut), vector in zip(ready, out, strict=True):
                rows.append(_row(item, None, cut))
                features.append(vector)
        if not renew(sessions, chunk.id, worker, settings.work_lease_s):
            log.warning("lost the lease of chunk %d to another worker; leaving it", chunk.index)
            return None
    store = FeatureStore(settings.learning_dir / "features", feature_space(settings, params))
    store.write_chunk(f"chunk-{chunk.job_id}-{chunk.index:05d}", rows, features)
    with transaction(sessions) as session:
        session.execute(
            update(WorkChunk)
            .where(WorkChunk.id == chunk.id)
            .values(state="done", done_at=_now(), worker=worker)
        )
    return len(items)


_EXTRACTORS: dict[ExtractionParams, FeatureExtractor] = {}


def _extractor(settings: ServerSettings, params: ExtractionParams) -> FeatureExtractor:
    """One extractor per process and params: loading ResNet-152 takes seconds."""
    if params not in _EXTRACTORS:
        _EXTRACTORS[params] = make_extractor(
            settings, params.extractor, params.runtime, params.random_seed, settings.clustering_threads
        )
    return _EXTRACTORS[params]


def _finish_if_complete(sessions: sessionmaker[Session], job_id: str) -> bool:
    with transaction(sessions) as session:
        counts = dict(
            session.execute(
                select(WorkChunk.state, func.count())
                .where(WorkChunk.job_id == job_id)
                .group_by(WorkChunk.state)
            ).all()
        )
        total = sum(counts.values())
        job = _job(session, job_id)
        done = counts.get("done", 0)
        job.progress = round(done / total, 3) if total else 1.0
        job.updated_at = _now()
        if done == total and job.state != "done":
            job.state = "done"
            job.message = f"{job.params.get('crops', 0)} crops extracted into {job.params.get('space')}"
        return done == total


def work_on(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    job_id: str,
    on_chunk: Callable[[WorkChunk], None] | None = None,
) -> int:
    """Plan the job if nobody has, then take chunks until every chunk is done; returns how many
    crops this worker extracted."""
    worker = worker_name()
    plan(settings, sessions, job_id)
    with sessions() as session:
        params = ExtractionParams.from_job(_job(session, job_id).params)
    extractor: FeatureExtractor | None = None
    extracted = 0
    while True:
        with sessions() as session:
            state = session.scalar(select(Job.state).where(Job.id == job_id))
        if state == "planning":  # another worker is planning: wait for its chunks
            time.sleep(0.5)
            continue
        if state in ("done", "failed"):
            return extracted
        # loaded before claiming: a lease must not run out while a model loads
        extractor = extractor or _extractor(settings, params)
        chunk = claim(sessions, job_id, worker, settings.work_lease_s)
        if chunk is None:
            if _finish_if_complete(sessions, job_id):
                return extracted
            time.sleep(min(settings.work_lease_s / 4, 2.0))  # others hold leases: wait for them
            continue
        count = extract_chunk(settings, sessions, chunk, extractor, params, worker)
        if count is not None:
            extracted += count
            log.info("%s: chunk %d of job %s done (%d crops)", worker, chunk.index, job_id, count)
            if on_chunk:
                on_chunk(chunk)
        _finish_if_complete(sessions, job_id)
