"""Per-device MQTT credentials and ACL with a real Mosquitto: a trap cannot speak for another."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import MqttCollector
from tests.server.conftest import detection_payload
from trapline.cli.broker import MosquittoBroker
from trapline.server.security import write_mosquitto_auth


def _client(port: int, user: str, password: str) -> tuple[mqtt.Client, list[int]]:
    refused: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_publish = lambda _c, _u, _mid, reason, _p: (
        refused.append(reason.value) if reason.is_failure else None
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, refused


def test_a_trap_cannot_publish_as_another_or_read_others_commands(tmp_path: Path) -> None:
    passwd, acl = write_mosquitto_auth(
        tmp_path / "auth",
        "trapline",
        devices={"trap-01": "pw-01", "trap-02": "pw-02"},
        server_users={"ingest": "pw-ingest"},
    )
    config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=config) as broker:
        server = MqttCollector(broker.port, client_id="ingest-test")
        server.client.username_pw_set("ingest", "pw-ingest")
        server.client.reconnect()
        assert server.wait_for(lambda: server.client.is_connected(), 10)
        trap1, refused = _client(broker.port, "trap-01", "pw-01")
        # commands: trap-01 receives its own, never trap-02's, even when it subscribes to them
        received: list[str] = []
        trap1.on_message = lambda _c, _u, msg: received.append(msg.topic)
        trap1.subscribe([("trapline/trap-02/cmd/model", 1), ("trapline/trap-01/cmd/model", 1)])
        server.wait_for(lambda: False, 0.5)  # let the subscriptions settle
        for device in ("trap-02", "trap-01"):
            server.client.publish(
                f"trapline/{device}/cmd/model", json.dumps({"version": "2"}), qos=1
            ).wait_for_publish(5)
        assert server.wait_for(lambda: received == ["trapline/trap-01/cmd/model"], 10), received
        # paho reconnects after a refused PUBACK (0x87): keep this last
        own = trap1.publish("trapline/trap-01/detections", detection_payload("trap-01", 1), qos=1)
        forged = trap1.publish("trapline/trap-02/detections", detection_payload("trap-02", 1), qos=1)
        own.wait_for_publish(5)
        forged.wait_for_publish(5)
        assert server.wait_for(lambda: len(refused) == 1 and len(server.payloads("/detections")) >= 1, 10)
        ids = [p["id"] for p in server.payloads("/detections")]
        assert ids == ["trap-01:000000001"]
        assert refused == [0x87]  # MQTT 5 PUBACK: not authorized
        wrong = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder", protocol=mqtt.MQTTv5)
        wrong.username_pw_set("trap-01", "guess")
        codes: list[int] = []
        wrong.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
        wrong.connect("127.0.0.1", broker.port)
        wrong.loop_start()
        assert server.wait_for(lambda: bool(codes), 10)
        assert codes[0] in (0x86, 0x87)  # bad user name or password / not authorized
        for client in (trap1, wrong):
            client.loop_stop()
        server.close()
