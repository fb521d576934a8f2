"""Real parts for fault tests: a Mosquitto with passwords and an ACL, and an ingest worker (the
`trapline server ingest` command) storing into SQLite, whose stored ids a test can count."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import MqttCollector
from trapline.cli.broker import MosquittoBroker

_cleanups: list[Callable[[], None]] = []


def track(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember a process this test started, so `reap` ends it if the test fails on the way."""

    def end() -> None:
        if process.poll() is None:
            process.kill()
            process.wait()

    _cleanups.append(end)
    return process


def reap() -> None:
    """End what the test started and left running (after a failure); newest first."""
    while _cleanups:
        _cleanups.pop()()


PASSWORDS = {"trap-07": "trap-password", "collector": "collector-password", "ingest": "ingest-password"}


def secured_broker(folder: Path, device_topics: list[str], extra_config: str = "") -> MosquittoBroker:
    """Mosquitto with passwords and an ACL: trap-07 may write only `device_topics`; the collector
    and the ingest worker read everything."""
    folder.mkdir(parents=True, exist_ok=True)
    passwords = folder / "passwd"
    passwords.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
    acl = folder / "acl"
    lines = ["user trap-07", *(f"topic write {t}" for t in device_topics)]
    lines += ["user collector", "topic read #", "user ingest", "topic read #"]
    acl.write_text("\n".join(lines) + "\n")
    config = f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n{extra_config}"
    broker = MosquittoBroker(folder / "broker", extra_config=config).start()
    _cleanups.append(broker.stop)
    return broker


def collector_for(broker: MosquittoBroker, secured: bool = True) -> MqttCollector:
    collector = MqttCollector(broker.port)
    if secured:
        collector.client.username_pw_set("collector", PASSWORDS["collector"])
        collector.client.reconnect()
    assert collector.wait_for(lambda: collector.client.is_connected(), 10)
    assert collector.wait_for(lambda: False, 0.3) is False  # let the subscription settle
    return collector


class IngestProcess:
    """`trapline server ingest` into a fresh SQLite database, as systemd would run it."""

    def __init__(self, folder: Path, port: int, secured: bool = True) -> None:
        from trapline.server.migrate import upgrade

        folder.mkdir(parents=True, exist_ok=True)
        self.database = folder / "server.sqlite"
        upgrade(f"sqlite:///{self.database}")
        self.log_path = folder / "ingest.log"
        env = {
            **os.environ,
            "TRAPLINE_SERVER_DATABASE_URL": f"sqlite:///{self.database}",
            "TRAPLINE_SERVER_DATA_DIR": str(folder / "data"),
            "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
            "TRAPLINE_SERVER_MQTT_PORT": str(port),
            "TRAPLINE_SERVER_MQTT_CLIENT_ID": "ingest-fault-test",
            "TRAPLINE_SERVER_AUTO_REGISTER": "true",
        }
        if secured:
            env |= {
                "TRAPLINE_SERVER_MQTT_USERNAME": "ingest",
                "TRAPLINE_SERVER_MQTT_PASSWORD": PASSWORDS["ingest"],
            }
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trapline.cli", "server", "ingest"],
                stdout=log_file,
                stderr=log_file,
                env=env,
            )
        _cleanups.append(self.stop)
        deadline = time.monotonic() + 60
        while "subscribed" not in self.log_path.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"ingest did not subscribe:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def frame_ids(self) -> list[str]:
        with sqlite3.connect(self.database) as db:
            return [str(row[0]) for row in db.execute("SELECT id FROM detection_frames")]

    def wait_for_frames(self, count: int, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(ids := self.frame_ids()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return ids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
