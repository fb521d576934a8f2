"""Fixtures shared by the whole suite: real Mosquitto, an MQTT collector, agent configs, data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from trapline.cli.broker import MosquittoBroker

if TYPE_CHECKING:
    from tests.support.ota import Release, ReleaseKit

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "edge" / "samples"
SHARED = ROOT.parent / "shared"
CAMTRAP = SHARED / "data" / "camtrap-dev"
SHARED_WEIGHTS = SHARED / "weights"
# Waits on a spawned process are multiplied by this: `make arm64-check` runs the tests under
# qemu-aarch64, where starting Python and loading a model take a minute, not a second.
TIME_SCALE = float(os.environ.get("TRAPLINE_TEST_TIME_SCALE", "1"))


def needs_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared is only beside a full checkout)")
    return path


@pytest.fixture
def camtrap() -> Path:
    return needs_shared(CAMTRAP)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


class MqttCollector:
    """A subscriber with a persistent MQTT 5 session: it keeps every message, across outages."""

    def __init__(self, port: int, topic_filter: str = "trapline/#", client_id: str = "collector") -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

    def payloads(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collector(broker: MosquittoBroker) -> Iterator[MqttCollector]:
    sub = MqttCollector(broker.port)
    assert sub.wait_for(lambda: sub.client.is_connected(), 10)
    yield sub
    sub.close()


def agent_config(
    tmp_path: Path,
    port: int,
    source: dict[str, Any],
    device_id: str = "trap-07",
    **overrides: Any,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "device_id": device_id,
        "source": source,
        "mqtt": {"host": "127.0.0.1", "port": port, "backoff_min_s": 1, "backoff_max_s": 2},
        "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
        "quarantine_dir": str(tmp_path / "quarantine"),
        "heartbeat_interval_s": 1,
    }
    config.update(overrides)
    return config


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_agent(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """The real agent, as systemd would start it."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "edge", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


# --- model releases (built once per session: each build runs the detector on its reference frame) --
@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKit:
    from tests.support.ota import ReleaseKit

    return ReleaseKit(tmp_path_factory.mktemp("releases"))


@pytest.fixture(scope="session")
def release_v2(kit: ReleaseKit) -> Release:
    return kit.build("2")
