"""The agent against a real Mosquitto: outages, kill -9, bad files. Nothing may be lost."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import (
    SAMPLES,
    MqttCollector,
    agent_config,
    start_agent,
    write_config,
)
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import DetectionMessage, SequenceSummary
from trapline.edge.spool import DetectionSpool

pytestmark = pytest.mark.slow


def _finish(agent: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    try:
        code = agent.wait(timeout_s)
    except subprocess.TimeoutExpired:
        agent.kill()
        pytest.fail(f"agent did not finish in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
    assert code == 0, log_path.read_text()[-3000:]


def _unique_ids(collector: MqttCollector) -> set[str]:
    return {p["id"] for p in collector.payloads("/detections")}


def _ids(config: dict[str, object], numbers: range) -> list[str]:
    """The ids the agent gives frames `numbers`: "<device>:<installation>:<counter>"."""
    spool = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30)  # type: ignore[index]
    installation = spool.installation_id
    spool.close()
    return [f"trap-07:{installation}:{n:09d}" for n in numbers]


def test_broker_outage_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, collector: MqttCollector
) -> None:
    frames = 300
    source = {"type": "replay", "files": [str(SAMPLES)], "count": frames, "interval_s": 0.02}
    config = agent_config(tmp_path, broker.port, source, bursts={"gap_s": 0.5})
    log_path = tmp_path / "agent.log"
    agent = start_agent(write_config(tmp_path, config), log_path)

    assert collector.wait_for(lambda: len(_unique_ids(collector)) >= 40, 120), log_path.read_text()
    broker.stop()
    received_before_outage = len(_unique_ids(collector))
    time.sleep(6)  # the agent keeps capturing into its spool
    spool_depth_during_outage = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30).depth
    broker.start()
    _finish(agent, log_path, timeout_s=300)

    assert collector.wait_for(lambda: len(_unique_ids(collector)) == frames, 30)
    messages = [
        DetectionMessage.model_validate_json(json.dumps(p)) for p in collector.payloads("/detections")
    ]
    ids = [m.id for m in messages]
    assert received_before_outage < frames  # the outage really happened mid-run
    assert spool_depth_during_outage > 0  # ... and results waited in the spool
    assert sorted(set(ids)) == _ids(config, range(1, frames + 1))
    # every frame belongs to exactly one sequence summary, and the counts add up
    summaries = {
        s.sequence_id: s
        for s in (
            SequenceSummary.model_validate_json(json.dumps(p)) for p in collector.payloads("/sequences")
        )
    }
    frames_per_sequence: dict[str, int] = {}
    for message in {m.id: m for m in messages}.values():
        frames_per_sequence[message.sequence_id] = frames_per_sequence.get(message.sequence_id, 0) + 1
    assert set(summaries) == set(frames_per_sequence)
    assert all(summaries[s].frame_count == n for s, n in frames_per_sequence.items())
    statuses = [p["state"] for p in collector.payloads("/status")]
    assert statuses[-1] == "stopped"


def test_kill_minus_nine_with_unsent_messages_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, collector: MqttCollector
) -> None:
    frames = 40
    source = {"type": "replay", "files": [str(SAMPLES)], "count": frames, "interval_s": 0.0}
    config = agent_config(tmp_path, broker.port, source)
    config_path = write_config(tmp_path, config)
    spool_path = Path(config["spool"]["path"])
    broker.stop()  # nothing can be sent: everything piles up in the spool

    agent = start_agent(config_path, tmp_path / "agent1.log")
    deadline = time.monotonic() + 120
    depth = 0
    while time.monotonic() < deadline and depth < 15:
        time.sleep(0.5)
        if spool_path.exists():
            depth = DetectionSpool(spool_path, max_bytes=1 << 30).depth
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    assert depth >= 15, (tmp_path / "agent1.log").read_text()

    broker.start()
    assert collector.wait_for(lambda: collector.client.is_connected(), 10)
    second = start_agent(config_path, tmp_path / "agent2.log")
    _finish(second, tmp_path / "agent2.log", timeout_s=180)
    assert collector.wait_for(lambda: len(_unique_ids(collector)) == frames, 30)
    # exactly ids 1..frames: a frame processed twice would have taken a new id past `frames`
    assert sorted(_unique_ids(collector)) == _ids(config, range(1, frames + 1))


def _png(width: int, height: int) -> bytes:
    """A valid, highly compressible PNG of any size (a 20000x20000 one is ~1 MB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * width  # filter byte + greyscale pixels
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_bad_files_are_quarantined_and_good_ones_published(
    tmp_path: Path, camtrap: Path, broker: MosquittoBroker, collector: MqttCollector
) -> None:
    camera = tmp_path / "dcim"
    camera.mkdir()
    good = sorted(SAMPLES.glob("*.jpg"))[:4]
    for path in good:
        (camera / path.name).write_bytes(path.read_bytes())
    jpeg = good[0].read_bytes()
    bad = {
        "error_img.JPG": (camtrap / "bad" / "error_img.JPG").read_bytes(),
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "random.jpg": bytes(range(256)) * 64,
        "notes.txt": b"battery replaced 2026-11-20\n",
        "huge.png": _png(20000, 20000),
    }
    for name, data in bad.items():
        (camera / name).write_bytes(data)
    source = {"type": "folder", "path": str(camera), "poll_interval_s": 0.2, "settle_s": 0.3}
    config = agent_config(tmp_path, broker.port, source)
    log_path = tmp_path / "agent.log"
    agent = start_agent(write_config(tmp_path, config), log_path)
    try:
        assert collector.wait_for(lambda: len(_unique_ids(collector)) == len(good), 120), (
            log_path.read_text()[-3000:]
        )
        quarantine = tmp_path / "quarantine"
        assert collector.wait_for(lambda: len(list(quarantine.glob("*.reason.txt"))) == len(bad), 30), (
            log_path.read_text()[-3000:]
        )
        # a good file arriving later is still picked up: the agent is alive and well
        (camera / "later.jpg").write_bytes(good[1].read_bytes())
        assert collector.wait_for(lambda: len(_unique_ids(collector)) == len(good) + 1, 60)
        assert agent.poll() is None
        # heartbeats come every second: wait for one sent after the quarantines (asserting on the
        # last one received failed when the quarantines and later.jpg all fell within one second)
        assert collector.wait_for(
            lambda: any(h["frames_quarantined"] == len(bad) for h in collector.payloads("/heartbeat")), 10
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        _finish(agent, log_path, timeout_s=30)

    published = {p["image"]["file"] for p in collector.payloads("/detections")}
    assert published == {p.name for p in good} | {"later.jpg"}
    quarantined = {
        p.name.split("_", 1)[1]
        for p in (tmp_path / "quarantine").iterdir()
        if not p.name.endswith(".reason.txt")
    }
    assert quarantined == set(bad)
    reasons = "".join(p.read_text() for p in (tmp_path / "quarantine").glob("*.reason.txt"))
    for expected in ("empty file", "truncated JPEG", "not a JPEG or PNG", "image too large"):
        assert expected in reasons
    assert sorted(p.name for p in camera.iterdir()) == sorted([p.name for p in good] + ["later.jpg"])
    assert max(h["frames_quarantined"] for h in collector.payloads("/heartbeat")) == len(bad)  # none twice
    assert collector.payloads("/status")[-1]["state"] == "stopped"


def test_last_will_marks_a_killed_trap_offline(
    tmp_path: Path, broker: MosquittoBroker, collector: MqttCollector
) -> None:
    source = {"type": "replay", "files": [str(SAMPLES)], "count": 10_000, "interval_s": 0.5}
    config = agent_config(tmp_path, broker.port, source, mqtt={
        "host": "127.0.0.1", "port": broker.port, "keepalive_s": 5, "will_delay_s": 2,
    })  # fmt: skip
    agent = start_agent(write_config(tmp_path, config), tmp_path / "agent.log")
    assert collector.wait_for(lambda: "online" in [p["state"] for p in collector.payloads("/status")], 60)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    # the broker notices the dead connection within 1.5 keepalives and sends the will after its delay
    assert collector.wait_for(lambda: collector.payloads("/status")[-1]["state"] == "offline", 20)
    will = collector.payloads("/status")[-1]
    assert "ts" not in will  # written at connect time, sent at death: no stale time to mislead
    assert will["agent_version"] and will["model"]["name"] == "trapline-nano"
