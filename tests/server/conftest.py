"""Server fixtures: a database (SQLite file, or a real PostgreSQL server), settings, devices."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from server.core.config import ServerSettings
from server.db import make_engine, session_factory, transaction
from server.ingest.worker import IngestWorker
from server.migrate import upgrade
from server.models import Device
from server.postgres_instance import TemporaryPostgres, available
from trapline.broker import MosquittoBroker

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[TemporaryPostgres]:
    if not available():
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'trapline.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"test_{next(_counter)}")
    upgrade(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'trapline.sqlite'}"
    upgrade(url)
    return url


def settings_for(
    url: str, tmp_path: Path, broker: MosquittoBroker | None = None, **extra: object
) -> ServerSettings:
    return ServerSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port if broker else 1883,
        **extra,  # type: ignore[arg-type]
    )


def register(sessions: sessionmaker[Session], *device_ids: str) -> None:
    with transaction(sessions) as session:
        for device_id in device_ids:
            session.merge(Device(id=device_id, state="unknown"))


def detection_payload(device_id: str, number: int, categories: tuple[str, ...] = ("animal",)) -> bytes:
    captured = datetime(2026, 11, 22, 3, 0, tzinfo=UTC) + timedelta(seconds=number)
    return json.dumps({
        "schema": "trapline.detections/1", "id": f"{device_id}:{number:09d}", "device_id": device_id,
        "captured_at": captured.isoformat(), "processed_at": captured.isoformat(),
        "sequence_id": f"{device_id}:seq:{number // 3:09d}", "frame_index": number % 3,
        "image": {"file": f"IMG_{number:04d}.JPG", "sha256": "a" * 64, "width": 2048, "height": 1536, "night": False},
        "model": {"name": "trapline-nano", "version": "1", "sha256": "b" * 64},
        "inference_ms": 15.0,
        "detections": [{"category": c, "conf": 0.8, "bbox": [0.1, 0.2, 0.3, 0.4]} for c in categories],
    }).encode()  # fmt: skip


class RunningWorker:
    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)
        self.thread.start()
        assert worker.connected.wait(10), "ingest worker did not connect"

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


@pytest.fixture
def sessions_for() -> Iterator[object]:
    engines = []

    def make(url: str) -> sessionmaker[Session]:
        engine = make_engine(url)
        engines.append(engine)
        return session_factory(engine)

    yield make
    for engine in engines:
        engine.dispose()
