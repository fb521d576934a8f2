"""Server-side faults: the ingest worker killed with SIGKILL mid-stream, then restarted; every id
is counted at the end (stored exactly once, boxes never doubled)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.server.conftest import detection_payload, mqtt_publisher, register, wait_until
from trapline.cli.broker import MosquittoBroker
from trapline.server.models import DeadLetter, Detection, DetectionFrame

MESSAGES = 3000


def _ingest(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "server", "ingest"],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )


def test_ingest_killed_mid_stream_stores_every_id_once(
    database_url: str, tmp_path: Path, broker: MosquittoBroker, sessions_for: Any
) -> None:
    sessions = sessions_for(database_url)
    register(sessions, "trap-01", "trap-02")
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": database_url,
        "TRAPLINE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_PORT": str(broker.port),
        "TRAPLINE_SERVER_INGEST_BATCH_SIZE": "100",  # many commits, so the kill lands between them
    }
    first = _ingest(env, tmp_path / "ingest1.log")
    assert wait_until(lambda: "subscribed" in (tmp_path / "ingest1.log").read_text(), 30)

    def stored() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count()).select_from(DetectionFrame)) or 0)

    publisher = mqtt_publisher(broker)
    published = threading.Event()

    def publish() -> None:
        for number in range(MESSAGES):
            device = ("trap-01", "trap-02")[number % 2]
            publisher.publish(f"trapline/{device}/detections", detection_payload(device, number), qos=1)
            if number % 100 == 0:
                threading.Event().wait(0.02)  # a steady stream, not one burst
        published.set()

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    assert wait_until(lambda: stored() >= 300, 60), (tmp_path / "ingest1.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)  # no goodbye: unacknowledged messages stay with the broker
    first.wait()
    at_kill = stored()
    second = _ingest(env, tmp_path / "ingest2.log")
    try:
        assert published.wait(60)
        assert wait_until(lambda: stored() == MESSAGES, 90), (
            stored(),
            (tmp_path / "ingest2.log").read_text()[-2000:],
        )
    finally:
        second.terminate()
        assert second.wait(30) == 0  # a clean stop on SIGTERM
        publisher.loop_stop()
    assert at_kill < MESSAGES  # the kill really happened mid-stream
    with sessions() as session:
        ids = list(session.scalars(select(DetectionFrame.id)))
        boxes = session.scalar(select(func.count()).select_from(Detection))
        dead = session.scalar(select(func.count()).select_from(DeadLetter))
    expected = {f"{('trap-01', 'trap-02')[n % 2]}:{n:09d}" for n in range(MESSAGES)}
    assert len(ids) == len(set(ids)) == MESSAGES
    assert set(ids) == expected
    assert boxes == MESSAGES  # one box each: none doubled by the redelivery, none lost
    assert dead == 0
