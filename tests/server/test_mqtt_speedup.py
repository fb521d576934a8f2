"""Received MQTT 5 properties decode the same with the shared tables as with paho's own class."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from trapline.server.ingest import mqtt_speedup


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
