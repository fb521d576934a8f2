"""A trap's below-threshold candidate crops reach the server and its clustering: the real agent
replays photos (one with an animal the model misses at its threshold) to a real Mosquitto, ingest and
API; the candidates go up after the regular crops, are stored as media kind `candidate` and get
features like every other crop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import SAMPLES
from tests.server.conftest import RunningWorker, settings_for, wait_until
from tests.support.live_server import serving
from trapline.cli.broker import MosquittoBroker
from trapline.edge.agent import Agent
from trapline.edge.config import AgentConfig
from trapline.edge.spool import DetectionSpool
from trapline.edge.uploader import PictureUploader
from trapline.server.api.main import create_app
from trapline.server.clustering.extract import work_on
from trapline.server.clustering.store import FeatureStore
from trapline.server.db import transaction
from trapline.server.ingest.worker import IngestWorker
from trapline.server.models import DetectionFrame, Device, Job, Media
from trapline.server.security import hash_token

TOKEN = "upload-token-trap-07-0123456789"
# the animal in the Peru photo scores about 0.25 (0.22-0.28 with full or half-scale decode): under
# the trap's threshold of 0.5 here, over the candidates' floor of 0.1
PHOTOS = ("peru-EK000067-39523-0.jpg", "buow-RCNX0242.jpg", "cougar-39858-0.jpg")


@pytest.fixture
def api(sqlite_url: str, tmp_path: Path, broker: MosquittoBroker) -> Iterator[tuple[object, str]]:
    settings = settings_for(sqlite_url, tmp_path, broker, feature_extractor="yolo-backbone",
                            clustering_min_conf=0.25)  # fmt: skip
    app = create_app(settings)
    with transaction(app.state.sessions) as session:
        session.add(Device(id="trap-07", state="unknown", token_hash=hash_token(TOKEN)))
    with serving(app) as url:
        ingest = RunningWorker(IngestWorker(settings, app.state.sessions))
        yield app, url
        ingest.stop()
    app.state.engine.dispose()


def test_candidates_go_up_last_and_are_clustered(
    api: tuple[object, str], broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = api
    monkeypatch.setenv("TRAPLINE_UPLOAD_TOKEN", TOKEN)
    config = AgentConfig.model_validate({
        "device_id": "trap-07",
        # one day (bursts minutes apart): the day's sample is queued once, after the last frame's
        # pictures, so "after every regular picture" is the order to expect (with a day change
        # between frames, a later frame's crop may rightly go up after the earlier day's sample)
        "source": {"type": "replay", "files": [str(SAMPLES / p) for p in PHOTOS],
                   "synthetic_start": "2026-11-22T00:00:00+00:00", "synthetic_mean_gap_h": 0.01},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "spool": {"path": str(tmp_path / "trap" / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "trap" / "quarantine"),
        "model": {"conf_threshold": 0.5},
        "upload": {"url": url, "mode": "crops", "candidates": {"per_day": 20, "floor": 0.1}},
    })  # fmt: skip
    agent = Agent(config)
    assert agent.run(drain_timeout_s=30) == 0
    # what the stopping agent had not sent stays queued; the next start sends it
    spool = DetectionSpool(config.spool.path, config.spool.max_bytes)
    uploader = PictureUploader(config.upload, spool)
    uploader.start()
    deadline = time.monotonic() + 30
    while spool.upload_backlog()[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    uploader.stop()
    spool.close()

    sessions = app.state.sessions  # type: ignore[attr-defined]

    def stored() -> tuple[list[Media], dict[str, DetectionFrame]]:
        with sessions() as session:
            media = list(session.scalars(select(Media).order_by(Media.id)))
            frames = {Path(f.image_file).name: f for f in session.scalars(select(DetectionFrame))}
        return media, frames

    def every_frame_stored() -> bool:  # pictures come over HTTP, their frames through the broker
        media, frames = stored()
        return {m.detection_id for m in media if m.detection_id} <= {f.id for f in frames.values()}

    assert wait_until(every_frame_stored, 20), "a picture names a frame ingest never stored"
    media, frames = stored()
    kinds = [m.kind for m in media]
    # the Peru frame reports nothing; the burrowing owls' frame has weak boxes too
    candidates = [m for m in media if m.kind == "candidate"]
    assert len(candidates) >= 3 and kinds.index("candidate") > max(
        i for i, k in enumerate(kinds) if k == "crop"
    )
    missed = frames[PHOTOS[0]]
    assert missed.detection_count == 0 and any(m.detection_id == missed.id for m in candidates)
    assert all(m.detection_id in {f.id for f in frames.values()} for m in candidates)

    # the server's extraction takes them with the stored boxes
    settings = app.state.settings  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(Job(id="extract-1", kind="extract_features", params={"extractor": "yolo-backbone"},
                        state="queued", progress=0.0, created_at=now, updated_at=now))  # fmt: skip
    work_on(settings, sessions, "extract-1")
    with sessions() as session:
        job = session.get(Job, "extract-1")
        assert job is not None and job.state == "done"
        space = job.params["space"]
    table = FeatureStore(settings.learning_dir / "features", space).load()
    extracted = {
        k for k, kind in zip(table.keys, table.meta["source_kind"], strict=True) if kind == "candidate"
    }
    assert extracted == {f"m{m.id}" for m in candidates} and not table.failures
    assert any(kind == "crop" for kind in table.meta["source_kind"])  # the reported boxes, from their crops
