"""The trap's command link: its own commands only, validated, never a crash; a real Mosquitto with
per-device credentials and the generated ACL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from tests.support.ota import Release
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import ModelCommand, TopicKind
from trapline.edge.config import MqttConfig
from trapline.edge.downlink import CommandDispatcher, MqttCommandLink
from trapline.server.security import write_mosquitto_auth

COMMAND = json.loads(
    Release("trapline-nano", "2", Path(), Path(), "a" * 64, 1000, "b" * 64, "0123456789abcdef")
    .command("/api/v1/releases/3/bundle", release_id=3)
    .to_json()
)


class Recorder:
    def __init__(self) -> None:
        self.handled: list[BaseModel | None] = []
        self.errors: list[tuple[TopicKind | None, str]] = []
        self.event = threading.Event()

    def handle(self, command: BaseModel | None) -> None:
        self.handled.append(command)
        self.event.set()

    def error(self, kind: TopicKind | None, reason: str) -> None:
        self.errors.append((kind, reason))
        self.event.set()

    def wait(self, count: int, timeout_s: float = 10) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.handled) + len(self.errors) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.handled) + len(self.errors) >= count


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        ("trapline/trap-01/cmd/model", b"{not json", "malformed cmd/model command: not JSON"),
        (
            "trapline/trap-01/cmd/model",
            json.dumps({**COMMAND, "size": "1000"}).encode(),
            "size: Input should be",
        ),
        ("trapline/trap-01/cmd/model", json.dumps({**COMMAND, "url": "file:///etc/passwd"}).encode(), "url:"),
        ("trapline/trap-01/cmd/model", json.dumps({**COMMAND, "extra": 1}).encode(), "extra: Extra inputs"),
        ("trapline/trap-01/cmd/model", b"[" * 100_000, "exceeds"),
        ("trapline/trap-01/cmd/reboot", b"{}", "unknown command topic"),
        ("trapline/trap-02/cmd/model", json.dumps(COMMAND).encode(), "unknown command topic"),
        ("trapline/trap-01/detections", b"{}", "unknown command topic"),
    ],
)
def test_bad_commands_are_reported_never_raised(topic: str, payload: bytes, expected: str) -> None:
    recorder = Recorder()
    dispatcher = CommandDispatcher("trapline", "trap-01", {"cmd/model": recorder.handle}, recorder.error)
    dispatcher.dispatch(topic, payload)
    assert recorder.handled == []
    assert len(recorder.errors) == 1 and expected in recorder.errors[0][1], recorder.errors


def test_a_good_command_a_cleared_one_and_a_failing_handler() -> None:
    recorder = Recorder()
    dispatcher = CommandDispatcher("trapline", "trap-01", {"cmd/model": recorder.handle}, recorder.error)
    dispatcher.dispatch("trapline/trap-01/cmd/model", json.dumps(COMMAND).encode())
    dispatcher.dispatch("trapline/trap-01/cmd/model", b"")  # the server deleted the retained command
    assert isinstance(recorder.handled[0], ModelCommand) and recorder.handled[0].release_id == 3
    assert recorder.handled[1] is None

    def broken(_command: BaseModel | None) -> None:
        raise RuntimeError("boom")

    failing = CommandDispatcher("trapline", "trap-01", {"cmd/model": broken}, recorder.error)
    failing.dispatch("trapline/trap-01/cmd/model", json.dumps(COMMAND).encode())
    assert recorder.errors == [("cmd/model", "cmd/model command could not be handled: RuntimeError: boom")]
    with pytest.raises(ValueError, match="not server-to-trap"):
        CommandDispatcher("trapline", "trap-01", {"detections": recorder.handle}, recorder.error)


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    passwd, acl = write_mosquitto_auth(
        tmp_path / "auth", "trapline",
        devices={"trap-01": "pw-01", "trap-02": "pw-02"}, server_users={"srv": "pw-srv"},
    )  # fmt: skip
    config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=config) as broker:
        yield broker


def _client(port: int, user: str, password: str) -> tuple[mqtt.Client, list[int]]:
    refused: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_publish = lambda _c, _u, _mid, reason, _p: (
        refused.append(reason.value) if reason.is_failure else None
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, refused


def _link(port: int, device: str, password: str, monkeypatch: pytest.MonkeyPatch) -> MqttCommandLink:
    monkeypatch.setenv("TRAPLINE_MQTT_PASSWORD", password)
    config = MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "username": device, "backoff_min_s": 1, "backoff_max_s": 2}
    )
    return MqttCommandLink(config, device)


def test_a_trap_gets_its_own_commands_even_those_sent_while_it_was_away(
    secured_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = _client(secured_broker.port, "srv", "pw-srv")
    received: list[tuple[str, Any]] = []
    # retained before the trap ever connected
    server.publish("trapline/trap-01/cmd/model", json.dumps(COMMAND), qos=1, retain=True).wait_for_publish(5)
    server.publish("trapline/trap-02/cmd/model", json.dumps({**COMMAND, "release_id": 9}), qos=1, retain=True)
    link = _link(secured_broker.port, "trap-01", "pw-01", monkeypatch)
    link.start(lambda topic, payload: received.append((topic, json.loads(payload) if payload else None)))
    assert link.wait_subscribed(10), link.last_error
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received == [("trapline/trap-01/cmd/model", COMMAND)]
    link.stop()
    # away: a command sent now waits in the broker (persistent session, QoS 1)
    server.publish(
        "trapline/trap-01/cmd/model", json.dumps({**COMMAND, "release_id": 4}), qos=1
    ).wait_for_publish(5)
    again = _link(secured_broker.port, "trap-01", "pw-01", monkeypatch)
    again.start(lambda topic, payload: received.append((topic, json.loads(payload) if payload else None)))
    deadline = time.monotonic() + 10
    while not any(p and p["release_id"] == 4 for _, p in received) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p["release_id"] for _, p in received if p].count(4) == 1
    assert all(topic == "trapline/trap-01/cmd/model" for topic, _ in received)  # never trap-02's
    again.stop()
    server.loop_stop()


def test_only_the_server_may_write_commands(
    secured_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[str] = []
    link = _link(secured_broker.port, "trap-01", "pw-01", monkeypatch)
    link.start(lambda topic, _payload: received.append(topic))
    assert link.wait_subscribed(10)
    refusals = []
    # one client per attempt: paho drops the connection after a refused PUBACK
    for user, password, topic in (
        ("trap-02", "pw-02", "trapline/trap-01/cmd/model"),  # another trap
        ("trap-01", "pw-01", "trapline/trap-01/cmd/model"),  # the trap itself
    ):
        client, refused = _client(secured_broker.port, user, password)
        client.publish(topic, json.dumps(COMMAND), qos=1).wait_for_publish(5)
        refusals.append(refused)
        client.loop_stop()
    assert refusals == [[0x87], [0x87]]  # not authorized
    time.sleep(0.3)
    assert received == []
    link.stop()


def test_wrong_credentials_are_not_hammered(
    secured_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = _link(secured_broker.port, "trap-01", "wrong", monkeypatch)
    link.start(lambda _t, _p: None)
    deadline = time.monotonic() + 10
    while link.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link.last_error is not None and "refused" in link.last_error
    assert not link.wait_subscribed(1.5)
    link.stop()
