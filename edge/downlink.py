"""The trap's downlink: commands from the server on its own `<prefix>/<device>/cmd/#` topics.

As in Frigate's `comms/`, the transport sits behind a small interface (`CommandTransport`: start
with a message callback, stop) and a `CommandDispatcher` routes each command through a table of
handlers, one per command kind of the contract (`trapline.contracts.TOPICS`). A command is
validated like every payload: a malformed or unknown one is reported and dropped, never raised.

The MQTT transport has a connection of its own (client id `<client id>-cmd`) rather than sharing
the publisher's: its session is persistent (commands sent while the trap is offline wait in the
broker), the publisher's is not; a slow handler can never hold up the spool's acknowledgements (paho
runs callbacks on its network thread); and the publisher can change without touching this file.
The price is a second TCP connection and keepalive per trap: a few bytes a minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError

from trapline.contracts import TOPICS, TopicKind, is_valid_device_id, parse_payload, parse_topic
from trapline.edge.config import MqttConfig
from trapline.edge.mqtt_login import apply_login

log = logging.getLogger(__name__)

# a retained command waits in the broker for a trap that is away for up to this long
SESSION_EXPIRY_S = 30 * 24 * 3600
MAX_COMMAND_BYTES = 64 * 1024
# CONNACK reason codes that mean "your credentials are wrong": retrying soon will not help
_AUTH_FAILURES = {0x86, 0x87, 0x8C}

# a handler gets the validated command, or None when the server cleared a retained command
CommandHandler = Callable[[BaseModel | None], None]
# told about every command that could not be used: its kind (None if unknown) and why
ErrorHandler = Callable[[TopicKind | None, str], None]
MessageCallback = Callable[[str, bytes], None]


class CommandTransport(Protocol):
    """Delivers the trap's command messages (topic, payload) to a callback until stopped."""

    def start(self, on_message: MessageCallback) -> None: ...

    def stop(self) -> None: ...

    @property
    def alive(self) -> bool:
        """Still able to deliver (its worker thread runs): the agent feeds the watchdog on it."""
        ...


def describe_invalid(kind: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return f"malformed {kind} command: not JSON: {first['msg']}"
    where = ".".join(str(p) for p in first["loc"]) or "(payload)"
    return f"malformed {kind} command: {where}: {first['msg']} ({exc.error_count()} errors)"


class CommandDispatcher:
    """Validates a command and hands it to the handler its kind names in the table."""

    def __init__(
        self,
        prefix: str,
        device_id: str,
        handlers: Mapping[TopicKind, CommandHandler],
        on_error: ErrorHandler,
        max_bytes: int = MAX_COMMAND_BYTES,
    ) -> None:
        unknown = [kind for kind in handlers if kind not in TOPICS or TOPICS[kind].uplink]
        if unknown:
            raise ValueError(f"not server-to-trap commands: {unknown}")
        self.prefix = prefix
        self.device_id = device_id
        self.handlers = dict(handlers)
        self.on_error = on_error
        self.max_bytes = max_bytes
        self.handled = 0
        self.rejected = 0

    def dispatch(self, topic: str, payload: bytes) -> None:
        """Never raises: whatever arrives is either handled or reported."""
        parsed = parse_topic(self.prefix, topic)
        if parsed is None or parsed[0] != self.device_id or TOPICS[parsed[1]].uplink:
            self._reject(None, f"unknown command topic {topic[:200]!r}")
            return
        kind = parsed[1]
        handler = self.handlers.get(kind)
        if handler is None:
            self._reject(kind, f"this agent has no handler for {kind} commands")
            return
        command: BaseModel | None = None
        if payload:  # an empty retained message clears the command
            if len(payload) > self.max_bytes:
                self._reject(kind, f"{kind} command of {len(payload)} bytes exceeds {self.max_bytes}")
                return
            try:
                command = parse_payload(kind, payload)
            except ValidationError as exc:
                self._reject(kind, describe_invalid(kind, exc))
                return
            except Exception as exc:  # a hostile payload must never stop the agent
                self._reject(kind, f"unreadable {kind} command: {type(exc).__name__}: {exc}")
                return
        try:
            handler(command)
        except Exception as exc:
            log.exception("the %s handler failed", kind)
            self._reject(kind, f"{kind} command could not be handled: {type(exc).__name__}: {exc}")
            return
        self.handled += 1

    def _reject(self, kind: TopicKind | None, reason: str) -> None:
        self.rejected += 1
        log.warning("command refused: %s", reason[:300])
        try:
            self.on_error(kind, reason[:500])
        except Exception:
            log.exception("could not report a refused command")


def _connect_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    return props


class MqttCommandLink:
    """The trap's command subscription over MQTT (QoS 1, persistent session, own client id)."""

    def __init__(self, config: MqttConfig, device_id: str) -> None:
        if not is_valid_device_id(device_id):
            raise ValueError(f"invalid device id {device_id!r}")
        self.config = config
        self.device_id = device_id
        self.topic_filter = f"{config.prefix}/{device_id}/cmd/#"
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self._on_message: MessageCallback | None = None
        self._stopping = threading.Event()
        self._retry_timer: threading.Timer | None = None
        self._v5 = config.protocol == 5
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        base_id = cfg.client_id or f"trapline-{self.device_id}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{base_id}-cmd",
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else False,  # MQTT 3.1.1: a persistent session
        )
        apply_login(client, cfg)
        client.reconnect_delay_set(min_delay=cfg.backoff_min_s, max_delay=cfg.backoff_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._message
        return client

    # --- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the command link: {reason}"
            if reason.value in _AUTH_FAILURES:
                log.error(
                    "command link: the broker refused the credentials (%s); retrying in %.0f s",
                    reason,
                    self.config.auth_retry_s,
                )
                client.disconnect()
                self._retry_later(self.config.auth_retry_s)
            return
        # subscribing again on every connect is harmless, and the broker sends the retained
        # commands again: handlers treat a command they already follow as a no-op
        client.subscribe(self.topic_filter, qos=1)
        log.info("command link connected (session present: %s)", getattr(flags, "session_present", "?"))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"broker refused the command subscription: {', '.join(failed)}"
            log.error("%s", self.last_error)
            return
        self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("command link disconnected: %s", reason)

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(msg.topic, bytes(msg.payload))

    # --- lifecycle --------------------------------------------------------------------------------
    def _connect(self) -> None:
        cfg = self.config
        if self._v5:
            self._client.connect_async(
                cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=_connect_properties()
            )
        else:
            self._client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)
        self._client.loop_start()

    def _retry_later(self, delay_s: float) -> None:
        def retry() -> None:
            if self._stopping.is_set():
                return
            self._client.loop_stop()
            self._connect()

        self._retry_timer = threading.Timer(delay_s, retry)
        self._retry_timer.daemon = True
        self._retry_timer.start()

    def start(self, on_message: MessageCallback) -> None:
        self._on_message = on_message
        self._connect()

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self.subscribed.wait(timeout_s)

    @property
    def alive(self) -> bool:
        """paho's network thread runs, or a retry after refused credentials is pending."""
        thread = getattr(self._client, "_thread", None)  # where paho keeps its loop_start thread
        retrying = self._retry_timer is not None and self._retry_timer.is_alive()
        return retrying or (isinstance(thread, threading.Thread) and thread.is_alive())

    def stop(self) -> None:
        self._stopping.set()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        self._client.disconnect()
        self._client.loop_stop()


class Downlink:
    """A transport and a dispatcher together: what the agent starts and stops."""

    def __init__(self, transport: CommandTransport, dispatcher: CommandDispatcher) -> None:
        self.transport = transport
        self.dispatcher = dispatcher

    def start(self) -> None:
        self.transport.start(self.dispatcher.dispatch)

    @property
    def alive(self) -> bool:
        return self.transport.alive

    def stop(self) -> None:
        self.transport.stop()
