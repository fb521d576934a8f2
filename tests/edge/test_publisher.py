"""The trap's MQTT link against a real Mosquitto whose ACL refuses topics (MQTT 5 and 3.1.1).

The broker below runs with the test broker's `max_queued_messages 0`, under which Mosquitto 2.0
also drops the connection of a client whose message it refused: the harder case, tested here.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, MqttCollector, agent_config, write_config
from tests.support.fleet import PASSWORDS, IngestProcess, collector_for, secured_broker, track
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import DetectionMessage, ImageInfo, ModelRef, SequenceSummary, StatusMessage
from trapline.edge.config import MqttConfig
from trapline.edge.publisher import MqttPublisher, ReconnectBackoff
from trapline.edge.spool import DetectionSpool, OutboundMessage, SpoolError


def _run_agent(config: dict[str, Any], tmp_path: Path, name: str = "agent") -> subprocess.Popen[bytes]:
    log_path = tmp_path / f"{name}.log"
    with log_path.open("ab") as log_file:
        return track(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trapline.cli",
                    "edge",
                    "run",
                    "--config",
                    str(write_config(tmp_path, config)),
                ],
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "TRAPLINE_MQTT_PASSWORD": PASSWORDS["trap-07"], "PYTHONUNBUFFERED": "1"},
            )
        )


def _finish(agent: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> int:
    try:
        return agent.wait(timeout_s)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        pytest.fail(f"agent did not finish in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def _config(tmp_path: Path, port: int, protocol: int, source: dict[str, Any], **mqtt: Any) -> dict[str, Any]:
    settings = {"host": "127.0.0.1", "port": port, "username": "trap-07", "protocol": protocol}
    settings |= {"backoff_min_s": 1, "backoff_max_s": 2, **mqtt}
    return agent_config(
        tmp_path, port, source, mqtt=settings, heartbeat_interval_s=0.3, bursts={"gap_s": 0.3}
    )


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [5, 311])
def test_a_refused_topic_never_stops_the_rest(tmp_path: Path, protocol: int) -> None:
    allowed = [f"trapline/trap-07/{kind}" for kind in ("status", "detections", "heartbeat")]
    broker = secured_broker(tmp_path / "mq", allowed)  # sequences: not authorized
    collector = collector_for(broker)
    ingest = IngestProcess(tmp_path / "server", broker.port)
    frames = 16
    source = {
        "type": "replay",
        "files": [str(SAMPLES)],
        "count": frames,
        "burst_size": 4,
        "burst_pause_s": 0.6,
    }
    config = _config(tmp_path, broker.port, protocol, source)
    try:
        agent = _run_agent(config, tmp_path)
        # the source runs dry and the agent waits until its spool is empty: it must get there
        assert _finish(agent, tmp_path / "agent.log", timeout_s=90) == 0
        ids = {p["id"] for p in collector.payloads("/detections")}
        assert collector.wait_for(
            lambda: len({p["id"] for p in collector.payloads("/detections")}) == frames, 10
        )
        log = (tmp_path / "agent.log").read_text()
        spool = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30)
        states = [p["state"] for p in collector.payloads("/status")]
        assert collector.payloads("/sequences") == []  # refused by the ACL, whatever the protocol
        if protocol == 5:
            # each refused summary is a dead letter, kept and counted; none was sent in a loop
            dead = spool.dead_letters()
            assert len(dead) >= 3, log[-3000:]
            assert all(d.topic == "trapline/trap-07/sequences" for d in dead)
            assert all("Not authorized (0x87)" in d.reason for d in dead)
            assert max(p["dead_letters"] for p in collector.payloads("/heartbeat")) >= 1
            # the broker dropped the link once at most: a quick reconnect, no `offline` flip
            assert log.count("connected to MQTT broker") <= 3, log[-3000:]
            assert "offline" not in states
        else:
            # MQTT 3.1.1: the broker acknowledges a denied message as if it took it; all the trap
            # can do is say so at start (and refuse a user name other than its id, tested below)
            assert "use protocol 5 for delivery guarantees" in log
            assert spool.dead_letter_count == 0
        assert spool.depth == 0 and spool.dropped == 0
        assert states[-1] == "stopped"
        spool.close()
        assert len(ids) == frames
        # and the server stored every one of them, once
        stored = ingest.wait_for_frames(frames, 30)
        assert sorted(stored) == sorted(ids)
        received = len(collector.payloads("/detections"))
        print(f"refused topic, MQTT {protocol}: {frames} frames, {received} received ({received - frames}"
              f" duplicates), {len(stored)} stored, {spool.dead_letter_count} dead letters")  # fmt: skip
    finally:
        ingest.stop()
        collector.close()
        broker.stop()


@pytest.mark.slow
def test_a_broker_that_refuses_our_own_status_gets_nothing_and_is_retried_with_backoff(
    tmp_path: Path,
) -> None:
    # the ACL is for another prefix: the trap may write none of its topics (a stale ACL)
    broker = secured_broker(tmp_path / "mq", ["fleet/trap-07/#"])
    frames = 6
    source = {"type": "replay", "files": [str(SAMPLES)], "count": frames}
    config = _config(tmp_path, broker.port, 5, source, backoff_max_s=60, stable_after_s=60)
    try:
        agent = _run_agent(config, tmp_path)
        log_path = tmp_path / "agent.log"
        deadline = time.monotonic() + 60
        while "refused our status" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(9)
        agent.send_signal(signal.SIGTERM)
        assert _finish(agent, log_path, timeout_s=30) == 0
        log = log_path.read_text()
        # waits 1, 2, 4, 8 s: at most 4 connections in ~9 s (one a second without a backoff)
        assert 2 <= log.count("connected to MQTT broker") <= 4, log[-3000:]
        assert "check the broker's ACL" in log
        spool = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30)
        # nothing was sent into the refusal: every result waits in the spool, none is a dead letter
        assert spool.dead_letter_count == 0 and spool.dropped == 0
        assert spool.depth >= frames
        spool.close()
    finally:
        broker.stop()


def test_a_user_name_other_than_the_device_id_is_refused_at_start(tmp_path: Path) -> None:
    source = {"type": "replay", "files": [str(SAMPLES)], "count": 1}
    config = _config(tmp_path, 1, 311, source, username="trap-08")
    agent = _run_agent(config, tmp_path)
    assert _finish(agent, tmp_path / "agent.log", timeout_s=60) == 78
    assert "must equal device_id" in (tmp_path / "agent.log").read_text()


def _detection(device: str, installation: str, number: int) -> bytes:
    now = datetime(2026, 11, 22, 3, 0, tzinfo=UTC) + timedelta(seconds=number)
    return DetectionMessage(
        id=f"{device}:{installation}:{number:09d}",
        device_id=device,
        captured_at=now,
        processed_at=now,
        sequence_id=f"{device}:{installation}:seq:000000001",
        frame_index=number,
        image=ImageInfo(file=f"IMG_{number}.JPG", sha256="a" * 64, width=640, height=480, night=False),
        model=ModelRef(name="trapline-nano", version="1", sha256="b" * 64),
        inference_ms=12.0,
        detections=[],
    ).to_json()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [5, 311])
def test_spooled_messages_of_a_renamed_trap_are_rehomed_not_lost(tmp_path: Path, protocol: int) -> None:
    """The trap was trap-06 (prefix `old`) while its spool filled; now it is trap-07 under the
    ACL for trap-07. Under 3.1.1 the old rows would be acked and silently dropped by the broker."""
    allowed = [f"trapline/trap-07/{kind}" for kind in ("status", "detections", "sequences", "heartbeat")]
    broker = secured_broker(tmp_path / "mq", allowed)
    collector = collector_for(broker)
    source = {"type": "replay", "files": [str(SAMPLES / "cougar-39858-0.jpg")], "count": 2}
    config = _config(tmp_path, broker.port, protocol, source)
    spool = DetectionSpool(Path(config["spool"]["path"]), max_bytes=1 << 30)
    old = [_detection("trap-06", "abc123", n) for n in range(1, 9)]
    summary = SequenceSummary(
        sequence_id="trap-06:abc123:seq:000000001",
        device_id="trap-06",
        first_frame_at=datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
        last_frame_at=datetime(2026, 11, 22, 3, 1, tzinfo=UTC),
        frame_count=8,
        categories={},
        mean_class_probabilities={"animal": 0.0},
    ).to_json()
    spool.put([OutboundMessage("old/trap-06/detections", payload) for payload in old])
    spool.put([OutboundMessage("old/trap-06/sequences", summary)])
    spool.put([OutboundMessage("old/trap-06/status", b'{"state": "online"}')])  # never spooled: set aside
    spool.close()
    try:
        agent = _run_agent(config, tmp_path)
        assert _finish(agent, tmp_path / "agent.log", timeout_s=90) == 0
        assert collector.wait_for(lambda: len(collector.payloads("/detections")) >= 10, 10)
        received = [
            DetectionMessage.model_validate_json(json.dumps(p)) for p in collector.payloads("/detections")
        ]
        assert {m.device_id for m in received} == {"trap-07"}
        moved = {f"trap-07:abc123:{n:09d}" for n in range(1, 9)}
        assert moved <= {m.id for m in received}
        assert len({m.id for m in received}) == 10  # eight re-homed, two new
        sequences = collector.payloads("/sequences")
        assert [s["sequence_id"] for s in sequences][:1] == ["trap-07:abc123:seq:000000001"]
        log = (tmp_path / "agent.log").read_text()
        assert "held messages for old/trap-06: moved 9 to trapline/trap-07/..., set 1 aside" in log
        heartbeat = collector.payloads("/heartbeat")[-1]
        assert heartbeat["rehomed"] == 9 and heartbeat["dead_letters"] == 1
    finally:
        collector.close()
        broker.stop()


def test_backoff_doubles_after_quick_disconnects_and_resets_only_after_a_stable_link() -> None:
    backoff = ReconnectBackoff(1, 16, stable_after_s=60, jitter=lambda: 0.0)
    assert [backoff.next_delay(None) for _ in range(6)] == [1, 2, 4, 8, 16, 16]
    assert backoff.next_delay(5.0) == 16  # up for 5 s only: still backing off
    assert backoff.next_delay(61.0) == 1  # up for a minute: start again from the minimum
    assert backoff.next_delay(None) == 2
    jittered = ReconnectBackoff(4, 4, 60, jitter=lambda: 1.0)
    assert jittered.next_delay(None) == 3.0  # jitter takes off at most a quarter


def _alive(publisher: MqttPublisher) -> bool:
    return publisher.alive


def test_the_link_survives_spool_errors_and_delivers_everything_after(
    tmp_path: Path, broker: MosquittoBroker, collector: MqttCollector
) -> None:
    spool = DetectionSpool(tmp_path / "spool.sqlite", max_bytes=1 << 20)
    payloads = [_detection("trap-07", "abc123", n) for n in range(1, 21)]
    spool.put([OutboundMessage("trapline/trap-07/detections", p) for p in payloads])
    real_batch, real_ack = spool.get_batch, spool.ack
    failures = {"batch": 3, "ack": 3}

    def flaky_batch(after_id: int, limit: int) -> list[Any]:
        if failures["batch"]:
            failures["batch"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_batch(after_id, limit)

    def flaky_ack(ids: Any) -> None:
        if failures["ack"]:
            failures["ack"] -= 1
            raise SpoolError("database or disk is full")
        real_ack(ids)

    spool.get_batch = flaky_batch  # type: ignore[method-assign]
    spool.ack = flaky_ack  # type: ignore[method-assign]

    def status(state: str, timestamped: bool) -> bytes:
        ts = datetime.now(UTC) if timestamped else None
        return StatusMessage(state=state, ts=ts, agent_version="test").to_json()  # type: ignore[arg-type]

    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port), "trap-07", spool, status)
    publisher.start()
    try:
        deadline = time.monotonic() + 30
        while spool.depth and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spool.depth == 0 and failures == {"batch": 0, "ack": 0}
        assert _alive(publisher)
    finally:
        publisher.stop()
        spool.close()
    ids = {p["id"] for p in collector.payloads("/detections")}
    assert ids == {f"trap-07:abc123:{n:09d}" for n in range(1, 21)}
