"""The fault suite, trap side: kill -9 of the agent and of the broker mid-stream, a damaged spool,
a full disk. Each ends by counting every id a real MQTT collector received and a real ingest
worker stored into SQLite: nothing lost; duplicates only where QoS 1 allows them, and the server
stores each id once. (A broker refusing a topic: tests/edge/test_publisher.py.)"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, MqttCollector, agent_config, start_agent, write_config
from tests.support.fleet import IngestProcess, collector_for, track
from trapline.cli.broker import MosquittoBroker
from trapline.edge.spool import DetectionSpool, corrupt_spools

pytestmark = pytest.mark.slow

# the broker a fleet needs to survive its own kill -9: its state saved after every change
DURABLE_BROKER = "autosave_on_changes true\nautosave_interval 1\n"


def _start(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    return track(start_agent(config_path, log_path))


def _finish(agent: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    try:
        code = agent.wait(timeout_s)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        pytest.fail(f"agent did not finish in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
    assert code == 0, log_path.read_text()[-3000:]


def _stop(agent: subprocess.Popen[bytes], log_path: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    _finish(agent, log_path, 60)


def _ids(collector: MqttCollector) -> list[str]:
    return [p["id"] for p in collector.payloads("/detections")]


def _expected(config: dict[str, Any], frames: int) -> set[str]:
    spool = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30)
    installation = spool.installation_id
    spool.close()
    return {f"trap-07:{installation}:{n:09d}" for n in range(1, frames + 1)}


def _report(name: str, frames: int, received: list[str], stored: list[str]) -> None:
    print(
        f"\nFAULT {name}: {frames} frames; collector got {len(received)} messages, "
        f"{len(set(received))} distinct ids ({len(received) - len(set(received))} duplicates); "
        f"ingest stored {len(stored)} frames ({len(stored) - len(set(stored))} twice)"
    )


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", extra_config=DURABLE_BROKER) as running:
        yield running


def _streaming(tmp_path: Path, port: int, frames: int) -> dict[str, Any]:
    source = {"type": "replay", "files": [str(SAMPLES)], "count": frames, "interval_s": 0.05}
    return agent_config(tmp_path, port, source, bursts={"gap_s": 0.5})


def test_kill_minus_nine_of_the_agent_mid_stream(tmp_path: Path, durable_broker: MosquittoBroker) -> None:
    collector = collector_for(durable_broker, secured=False)
    ingest = IngestProcess(tmp_path / "server", durable_broker.port, secured=False)
    frames = 30
    config = _streaming(tmp_path, durable_broker.port, frames)
    config_path = write_config(tmp_path, config)
    try:
        agent = _start(config_path, tmp_path / "agent1.log")
        assert collector.wait_for(lambda: len(set(_ids(collector))) >= 8, 120)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed_at = len(set(_ids(collector)))
        second = _start(config_path, tmp_path / "agent2.log")
        _finish(second, tmp_path / "agent2.log", 180)
        expected = _expected(config, frames)
        assert collector.wait_for(lambda: set(_ids(collector)) == expected, 30)
        stored = ingest.wait_for_frames(frames, 30)
        _report(f"agent kill -9 after {killed_at} frames", frames, _ids(collector), stored)
        assert killed_at < frames
        assert sorted(stored) == sorted(expected)  # each frame once, none lost, none made twice
    finally:
        ingest.stop()
        collector.close()


def test_kill_minus_nine_of_the_broker_mid_stream(tmp_path: Path, durable_broker: MosquittoBroker) -> None:
    collector = collector_for(durable_broker, secured=False)
    ingest = IngestProcess(tmp_path / "server", durable_broker.port, secured=False)
    frames = 30
    config = _streaming(tmp_path, durable_broker.port, frames)
    try:
        agent = _start(write_config(tmp_path, config), tmp_path / "agent.log")
        assert collector.wait_for(lambda: len(set(_ids(collector))) >= 8, 120)
        durable_broker.kill()
        killed_at = len(set(_ids(collector)))
        time.sleep(2)  # the trap keeps capturing into its spool
        durable_broker.start()
        _finish(agent, tmp_path / "agent.log", 180)
        expected = _expected(config, frames)
        collector.wait_for(lambda: set(_ids(collector)) == expected, 30)
        stored = ingest.wait_for_frames(frames, 10)
        _report(f"broker kill -9 after {killed_at} frames", frames, _ids(collector), stored)
        assert killed_at < frames
        assert set(_ids(collector)) == expected  # the trap lost nothing: a subscriber got every id
        assert len(stored) == len(set(stored))
        # ingest subscribes directly by default: Mosquitto queues for its persistent session while
        # it reconnects (a $share group's messages were dropped then: 12-42 of 30 stored)
        assert sorted(stored) == sorted(expected)
    finally:
        ingest.stop()
        collector.close()


def _camera(tmp_path: Path, count: int) -> Path:
    camera = tmp_path / "dcim"
    camera.mkdir(exist_ok=True)
    photos = sorted(SAMPLES.glob("*.jpg"))
    for n in range(count):
        shutil.copyfile(photos[n % len(photos)], camera / f"IMG_{len(list(camera.iterdir())):04d}.JPG")
    return camera


def _files(collector: MqttCollector) -> set[str]:
    return {p["image"]["file"] for p in collector.payloads("/detections")}


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_spool_is_replaced_and_every_picture_still_arrives(
    tmp_path: Path, broker: MosquittoBroker, damage: str
) -> None:
    pictures = 8
    camera = _camera(tmp_path, pictures)
    source = {"type": "folder", "path": str(camera), "poll_interval_s": 0.1, "settle_s": 0.2}
    config = agent_config(tmp_path, broker.port, source, heartbeat_interval_s=0.5)
    config_path = write_config(tmp_path, config)
    spool_path = Path(config["spool"]["path"])
    broker.stop()  # offline: every result waits in the spool
    agent = _start(config_path, tmp_path / "agent1.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not spool_path.exists():
            continue
        with contextlib.closing(sqlite3.connect(spool_path)) as db:  # read only: the agent owns it
            if db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] >= pictures:
                break
    _stop(agent, tmp_path / "agent1.log")
    assert not spool_path.with_name(spool_path.name + "-wal").exists()  # all in the one file now
    good = spool_path.read_bytes()
    # a card pulled mid-write, or a file system that lost blocks
    damaged = good[: len(good) // 2] if damage == "truncated" else b"\x5a\xa5" * (len(good) // 2)
    spool_path.write_bytes(damaged)

    broker.start()
    collector = collector_for(broker, secured=False)
    ingest = IngestProcess(tmp_path / "server", broker.port, secured=False)
    try:
        again = _start(config_path, tmp_path / "agent2.log")
        assert collector.wait_for(lambda: len(_files(collector)) == pictures, 120), (
            tmp_path / "agent2.log"
        ).read_text()[-3000:]
        assert collector.wait_for(
            lambda: any(h["spool_resets"] for h in collector.payloads("/heartbeat")), 10
        )
        assert again.poll() is None  # no crash loop
        _stop(again, tmp_path / "agent2.log")
        stored = ingest.wait_for_frames(pictures, 30)
        _report(f"{damage} spool", pictures, _ids(collector), stored)
        # the damaged file's results were never sent; the pictures were still on the card, so
        # they were processed again under the fresh spool's installation id: all arrived
        assert len(set(stored)) == pictures and set(stored) == set(_ids(collector))
        heartbeat = collector.payloads("/heartbeat")[-1]
        assert heartbeat["spool_resets"] == 1 and "moved aside" in heartbeat["last_error"]
        assert [p.read_bytes() for p in corrupt_spools(spool_path)] == [damaged]  # kept, never deleted
    finally:
        ingest.stop()
        collector.close()


def _fill(path: Path) -> None:
    error: OSError | None = None
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            error = exc
    assert error is not None and error.errno == errno.ENOSPC


def test_a_full_disk_loses_no_picture_and_processes_none_twice(
    tmp_path: Path, small_disk: Path, broker: MosquittoBroker
) -> None:
    collector = collector_for(broker, secured=False)
    ingest = IngestProcess(tmp_path / "server", broker.port, secured=False)
    camera = _camera(tmp_path, 4)
    source = {"type": "folder", "path": str(camera), "poll_interval_s": 0.1, "settle_s": 0.2}
    config = agent_config(tmp_path, broker.port, source)
    config["spool"] = {"path": str(small_disk / "spool.sqlite")}
    log_path = tmp_path / "agent.log"
    agent = _start(write_config(tmp_path, config), log_path)
    try:
        assert collector.wait_for(lambda: len(_files(collector)) == 4, 120), log_path.read_text()[-3000:]
        _fill(small_disk / "filler")  # something else filled the card
        _camera(tmp_path, 6)  # the camera keeps shooting
        assert collector.wait_for(lambda: "could not spool" in log_path.read_text(), 60)
        time.sleep(2)
        assert agent.poll() is None  # still running
        (small_disk / "filler").unlink()  # space again
        assert collector.wait_for(lambda: len(_files(collector)) == 10, 120), log_path.read_text()[-3000:]
        _stop(agent, log_path)
        stored = ingest.wait_for_frames(10, 30)
        _report("full disk", 10, _ids(collector), stored)
        assert len(stored) == 10 and set(stored) == set(_ids(collector))  # each picture once
        messages = [json.loads(json.dumps(p)) for p in collector.payloads("/detections")]
        assert len({m["image"]["file"] for m in messages}) == 10
    finally:
        if agent.poll() is None:
            agent.kill()
        ingest.stop()
        collector.close()
