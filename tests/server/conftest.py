"""Server fixtures: a database (SQLite file, or a real PostgreSQL server), settings, devices."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from tests.support.postgres import TemporaryPostgres, available
from trapline.cli.broker import MosquittoBroker
from trapline.server.api.main import create_app
from trapline.server.core.config import ServerSettings
from trapline.server.db import make_engine, session_factory, transaction
from trapline.server.ingest.store import store_batch
from trapline.server.ingest.validate import Accepted, validate
from trapline.server.ingest.worker import IngestWorker
from trapline.server.migrate import upgrade
from trapline.server.models import ApiToken, Device
from trapline.server.security import hash_token

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


def mqtt_publisher(broker: MosquittoBroker, client_id: str = "test-publisher") -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


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


ADMIN, VIEWER, UPLOAD = "admin-token-0123456789", "viewer-token-0123456789", "upload-token-trap-01"


def accepted(topic: str, payload: bytes) -> Accepted:
    verdict = validate("trapline", topic, payload, 10**6)
    assert isinstance(verdict, Accepted), verdict
    return verdict


def seed(app: Any) -> None:
    sessions = app.state.sessions
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        session.add(ApiToken(name="ada", token_hash=hash_token(ADMIN), role="admin", created_at=now))
        session.add(ApiToken(name="vic", token_hash=hash_token(VIEWER), role="viewer", created_at=now))
        session.add(Device(id="trap-01", state="unknown", token_hash=hash_token(UPLOAD)))
        session.add(Device(id="trap-02", state="unknown"))
    messages: list[Accepted] = []
    for n in range(30):  # trap-01: animals; every 5th frame also a person; frames 1 h apart over 2 days
        cats = ("animal", "person") if n % 5 == 0 else ("animal",)
        messages.append(accepted("trapline/trap-01/detections", detection_payload("trap-01", n * 3600, cats)))
    for n in range(5):
        messages.append(
            accepted("trapline/trap-02/detections", detection_payload("trap-02", n, ("vehicle",)))
        )
    status = {"state": "online", "ts": (now - timedelta(hours=1)).isoformat(), "agent_version": "0.1.0"}
    # trap-01 said "offline" (its clock: now) before "online" (its clock: an hour ago): the server
    # orders states by arrival, so "online" stands
    offline_first = {**status, "state": "offline", "ts": now.isoformat()}
    messages.append(accepted("trapline/trap-01/status", json.dumps(offline_first).encode()))
    messages.append(accepted("trapline/trap-01/status", json.dumps(status).encode()))
    offline = {**status, "state": "offline"}
    messages.append(accepted("trapline/trap-02/status", json.dumps(offline).encode()))
    assert all(isinstance(m, Accepted) for m in messages)
    with transaction(sessions) as session:
        store_batch(session, messages, [("trapline/x/detections", "not JSON", b"{")])


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(database_url, tmp_path))
    seed(app)
    # https, as in production: traps' upload tokens are refused over plain http from other hosts
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client
    app.state.engine.dispose()
