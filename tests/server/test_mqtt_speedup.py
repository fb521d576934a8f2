"""paho-mqtt made faster for ingest: received MQTT 5 properties decode the same with the shared
tables as with paho's own class; the buffered client receives every byte, in order, and its bulk
acknowledgements reach the broker (a real Mosquitto)."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.server.conftest import mqtt_publisher, wait_until
from trapline.cli.broker import MosquittoBroker
from trapline.server.ingest import mqtt_speedup
from trapline.server.ingest.mqtt_speedup import RECEIVE_CHUNK, BufferedClient


def _publish(properties: Properties | None) -> bytes:
    packed = properties.pack() if properties is not None else b"\x00"
    return struct.pack("!H", 19) + b"trapline/t-1/status" + struct.pack("!H", 9) + packed + b'{"x": 1}'


def test_decoding_is_unchanged() -> None:
    sent = Properties(PacketTypes.PUBLISH)
    sent.MessageExpiryInterval = 30
    sent.ContentType = "application/json"
    sent.UserProperty = ("a", "b")
    sent.UserProperty = ("c", "d")
    packets = [_publish(sent), _publish(None)]
    module: Any = _packet
    original = module.Properties
    try:
        module.Properties = Properties
        expected = [_packet.decode_publish(0x33, p, MQTTProtocolVersion.MQTTv5) for p in packets]
        assert mqtt_speedup.apply()
        got = [_packet.decode_publish(0x33, p, MQTTProtocolVersion.MQTTv5) for p in packets]
    finally:
        module.Properties = original
    for want, have in zip(expected, got, strict=True):
        mine, theirs = have.properties, want.properties
        assert isinstance(mine, mqtt_speedup.ReceivedProperties) and isinstance(theirs, Properties)
        assert str(mine) == str(theirs)
        assert mine.json() == theirs.json()
        assert mine.isEmpty() == theirs.isEmpty()
        assert (have.topic, have.mid, have.payload, have.qos, have.retain) == (
            want.topic, want.mid, want.payload, want.qos, want.retain,
        )  # fmt: skip
    received = got[0].properties
    assert received is not None
    received.clear()
    assert received.isEmpty()
    with pytest.raises(MQTTException):  # paho's checks still apply
        received.SessionExpiryInterval = 5  # not a PUBLISH property


# --- BufferedClient against a real Mosquitto ------------------------------------------------------


def _buffered_subscriber(broker: MosquittoBroker, received: list[mqtt.MQTTMessage]) -> BufferedClient:
    """A persistent-session subscriber to `t/#` with manual acks. Keepalive 120 s: a packet left
    in the client's buffer would wait for the next PINGRESP, far past the tests' timeouts."""
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id="buffered", protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)
    client.on_message = lambda _c, _u, message: received.append(message)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client.connect("127.0.0.1", broker.port, keepalive=120, clean_start=False, properties=props)
    client.loop_start()
    client.subscribe("t/#", qos=1)
    assert subscribed.wait(10)
    return client


def _publish_all(broker: MosquittoBroker, payloads: list[bytes]) -> None:
    publisher = mqtt_publisher(broker, "burst")
    infos = [publisher.publish(f"t/{i % 7}", payload, qos=1) for i, payload in enumerate(payloads)]
    for info in infos:
        info.wait_for_publish(30)
    publisher.disconnect()
    publisher.loop_stop()


def _stop(client: BufferedClient) -> None:
    client.disconnect()
    client.loop_stop()


def test_a_burst_is_received_whole_and_in_order(broker: MosquittoBroker) -> None:
    # small messages many to a chunk, some larger than a chunk (read across several), and a tail
    # of small ones: the last read brings many packets at once, and no more data follows to wake
    # a select for them
    sizes = [1, 300, 600, 70, 9, 1200]
    large = {500: RECEIVE_CHUNK + 5, 1700: 2 * RECEIVE_CHUNK + 11, 2500: RECEIVE_CHUNK - 3}
    payloads = [
        f"{i:05d}".encode() + bytes([i % 251]) * large.get(i, sizes[i % len(sizes)]) for i in range(3000)
    ]
    received: list[mqtt.MQTTMessage] = []
    client = _buffered_subscriber(broker, received)
    try:
        _publish_all(broker, payloads)
        assert wait_until(lambda: len(received) >= len(payloads), 30), f"{len(received)} received"
        assert [bytes(m.payload) for m in received] == payloads
        assert client.buffered_bytes == 0
    finally:
        _stop(client)


def test_bulk_acknowledgements_reach_the_broker(broker: MosquittoBroker) -> None:
    """Acknowledged messages are not sent again on the same session, the others are. (Mosquitto
    2.0.11 stops enforcing a Receive Maximum once acknowledgements flow, with paho's own acks
    too, so the session's redelivery is what tells.)"""
    payloads = [b"%d" % i for i in range(400)]
    received: list[mqtt.MQTTMessage] = []
    client = _buffered_subscriber(broker, received)
    _publish_all(broker, payloads)
    assert wait_until(lambda: len(received) == len(payloads), 30)
    client.ack_many(m.mid for m in received[:300])  # the last 100 are never acknowledged
    assert wait_until(lambda: not client.want_write(), 10)  # written to the socket
    time.sleep(0.5)  # and read by the broker before the connection closes
    _stop(client)

    again: list[mqtt.MQTTMessage] = []
    client = _buffered_subscriber(broker, again)  # the same session
    try:
        assert wait_until(lambda: len(again) >= 100, 30)
        time.sleep(0.5)  # anything acknowledged but sent again would be here by now
        assert sorted(bytes(m.payload) for m in again) == sorted(payloads[300:])
    finally:
        _stop(client)
