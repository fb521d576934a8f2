"""Make paho-mqtt decode received MQTT 5 messages without rebuilding its property tables.

paho builds a fresh `Properties` object for every PUBLISH it receives: 27-entry name and type
tables built with list lookups, then walked again by `clear()`. Measured on the development
machine: decoding one MQTT 5 PUBLISH took 200 µs, against 8 µs for MQTT 3.1.1, which made it the
largest cost per message in the ingest worker, ahead of validating the payload. The worker needs
MQTT 5 (Receive Maximum for flow control, session expiry), so instead the received messages'
properties are built from tables computed once per packet type. Behaviour is unchanged: the same
class, the same methods and checks; only the tables are shared (they are never written to) and
`clear()` deletes just the properties that are set.

Applied once, by the ingest worker; if a future paho no longer decodes through these names, the
patch is skipped (decoding stays correct, only slower).

`BufferedClient` removes the system calls per message. paho reads a packet with three or more
`recv` calls (its first byte, each byte of its length, the rest) and goes back to `select` after
every packet; each PUBACK is a separate `send`. Every one of those calls releases the GIL, and the
network thread then waits for the worker thread (busy validating and storing) to give it back:
measured in a reconnect storm, paho's loop took 43 % of the ingest process's samples. The client
here reads the socket in 256 KiB chunks, handles every packet already in its buffer before it
goes back to `select` (so that nothing received waits there), tells its owner when it has (so
that messages are handed to the worker thread a read at a time, not one by one), and sends a
batch's PUBACKs in one write.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

_TABLES = ("packetType", "types", "names", "properties")


class ReceivedProperties(Properties):
    """paho's Properties with its lookup tables shared per packet type."""

    _templates: dict[int, Properties] = {}  # noqa: RUF012 - a cache, filled once per packet type

    def __init__(self, packetType: int) -> None:  # noqa: N803 - paho's name
        template = self._templates.get(packetType)
        if template is None:
            template = self._templates[packetType] = Properties(packetType)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", template.types)
        object.__setattr__(self, "names", template.names)
        object.__setattr__(self, "properties", template.properties)

    def clear(self) -> None:
        for name in [key for key in vars(self) if key not in _TABLES]:
            delattr(self, name)

    def isEmpty(self) -> bool:  # noqa: N802 - paho's name
        return all(key in _TABLES for key in vars(self))


def apply() -> bool:
    """Decode received messages with ReceivedProperties; False when paho's layout has changed."""
    module: Any = _packet
    if getattr(module, "Properties", None) is Properties:
        module.Properties = ReceivedProperties
        return True
    if getattr(module, "Properties", None) is ReceivedProperties:
        return True
    log.warning("paho-mqtt's decoder has changed; MQTT 5 messages are decoded the slow way")
    return False


RECEIVE_CHUNK = 256 * 1024
_PUBACK = struct.Struct("!BBH")  # fixed header (PUBACK, remaining length 2), packet id


class BufferedClient(mqtt.Client):
    """paho's Client that reads in large chunks and acknowledges QoS 1 messages in bulk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = b""
        self._received_at = 0  # how much of `_received` paho has taken
        self._received_from: object = None  # the socket `_received` came from
        self._topic_callbacks = False
        self._reads_left = 1  # socket reads left in this loop_read
        # called in the network thread after each read of the socket, once every complete packet
        # in it has been handled (the ingest worker hands its messages over in one go)
        self.after_read: Callable[[], None] | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._received_from:  # a new connection: the old bytes are void
            self._received, self._received_at, self._received_from = b"", 0, self._sock
        if self._received_at >= len(self._received):
            if not self._reads_left:  # this read is done: write, keep alive, then select again
                raise BlockingIOError
            self._reads_left -= 1
            data = super()._sock_recv(max(bufsize, RECEIVE_CHUNK))  # b"" at end of stream
            if len(data) <= bufsize:
                return data
            self._received, self._received_at = data, 0
        start, self._received_at = self._received_at, min(self._received_at + bufsize, len(self._received))
        return self._received[start : self._received_at]

    @property
    def buffered_bytes(self) -> int:
        """Received bytes paho has not read yet."""
        if self._sock is not self._received_from:
            return 0
        return len(self._received) - self._received_at

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # one socket read per call, then every complete packet it brought (paho reads one packet
        # per call, and the rest would wait for a select that only sees the socket); a packet cut
        # at the end of the chunk waits for the next call, so that a socket that never runs dry
        # (a storm) cannot keep the network thread from writing acknowledgements and keepalives
        self._reads_left = 1
        try:
            rc = super().loop_read(max_packets)
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered_bytes:
                rc = super().loop_read(max_packets)
            return rc
        finally:
            if self.after_read is not None:
                self.after_read()

    def message_callback_add(self, sub: str, callback: mqtt.CallbackOnMessage) -> None:
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        if self._topic_callbacks:
            super()._handle_on_message(message)
            return
        # no per-topic callbacks: paho would walk its topic tree for every message to find none
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK every QoS 1 message id in `mids`, in that order, in one write (manual acks)."""
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        if packet:
            self._packet_queue(mqtt.PUBACK, packet, 0, 1)
