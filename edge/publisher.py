"""MQTT link of the trap: drains the spool at QoS 1, deleting each message only after its PUBACK.

One thread ("mqtt") owns the paho client: it connects, runs paho's network loop, handles acks and
sends spooled messages, so nothing races on the socket. Each connection gets a fresh client, so
nothing from the last one is sent before the broker has accepted our status. Its states:

    down --connect--> waiting for CONNACK --ok--> waiting for our `online` status's PUBACK
      ^                  | refused (credentials: wait auth_retry_s)        | accepted: ready
      |                  v                                                  v
      +----- backoff <-- link lost <-------- status refused (ACL) <---- ready: send the spool

- The spool is sent only once the broker has accepted our `online` status: a broker that refuses
  our own status topic (wrong prefix, stale ACL) would refuse everything, so nothing is sent (and
  nothing is lost); the link is dropped and tried again later.
- MQTT 5: a PUBACK with a reason >= 0x80 is final for that message: it moves to the spool's dead
  letters (counted in the heartbeat) and is never sent again in a loop. "Not authorized" and "topic
  name invalid" refuse a topic, not a message: every queued row for that topic follows it, and
  new ones do too, unsent, for an hour; then one is tried again (the ACL may have been fixed).
- MQTT 3.1.1 has no reason codes: a broker acknowledges a denied message as if it had taken it, and
  the message is lost. Use protocol 5 for delivery guarantees.
- When a link ends, the acks it delivered are matched first (acked rows are deleted); what was
  still unacknowledged is sent again from the spool on the next link (a duplicate at most, which
  QoS 1 allows and the server's idempotent ids absorb).
- A broker may refuse a message by dropping the connection without a PUBACK (Mosquitto with
  `max_queued_messages 0` does). After a link ends with messages unacknowledged, the next one is
  careful: one message at a time until it has stayed up `stable_after_s`. A message that is
  alone in flight when the link drops, right after it was sent, three times running, is a dead
  letter too.
- Reconnects back off exponentially (with jitter, capped); the delay resets only after a link has
  stayed ready for `stable_after_s`, so a connection that drops right after connect is not retried
  every second. Refused credentials wait `auth_retry_s`.
- Availability follows the contract: a retained `online` status on every connect, a retained
  `offline` Last Will without a timestamp (MQTT 5: sent only after `will_delay_s`, so a quick
  reconnect does not flip the status), and `stopped` on a clean shutdown.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from trapline.contracts import TOPICS, DeviceState, TopicKind, topic
from trapline.edge.config import MqttConfig
from trapline.edge.mqtt_login import apply_login
from trapline.edge.spool import DetectionSpool, SpooledMessage, SpoolError

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "your credentials are wrong": retrying soon will not help
_AUTH_FAILURES = {0x86, 0x87, 0x8C}
# PUBACK reason codes that refuse the topic itself: every message on it would be refused
_TOPIC_REFUSED = {0x87, 0x90}
_LOOP_TIMEOUT_S = 0.1
# careful mode: a drop this soon after sending the one message in flight counts against it
_SUSPECT_WINDOW_S = 5.0
_SUSPECT_STRIKES = 3
# a topic the broker refused is not tried again before this
_REFUSED_TOPIC_HOLD_S = 3600.0
_ERROR_LOG_INTERVAL_S = 60.0
_FINAL_STATUS_WAIT_S = 5.0

# (state, with a timestamp) -> status payload; the Last Will has none (see StatusMessage)
StatusPayload = Callable[[DeviceState, bool], bytes]


class ReconnectBackoff:
    """Capped exponential backoff with jitter that resets only after a link stayed up (AWS IoT SDK)."""

    def __init__(
        self,
        min_s: float,
        max_s: float,
        stable_after_s: float,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.min_s, self.max_s, self.stable_after_s = min_s, max_s, stable_after_s
        self._jitter = jitter
        self._next = min_s

    def next_delay(self, link_lasted_s: float | None) -> float:
        """The wait before the next attempt, after a link that was ready for `link_lasted_s`
        (None: it never became ready)."""
        if link_lasted_s is not None and link_lasted_s >= self.stable_after_s:
            self._next = self.min_s
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        # up to a quarter less, so a fleet that lost the broker together does not return in step
        return delay * (1.0 - 0.25 * self._jitter())


class MqttPublisher:
    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        spool: DetectionSpool,
        status_payload: StatusPayload,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.spool = spool
        self._status_payload = status_payload
        self._status_topic = topic(config.prefix, device_id, "status")
        self._backoff = ReconnectBackoff(config.backoff_min_s, config.backoff_max_s, config.stable_after_s)
        # owned by the mqtt thread only; the first two are per connection
        self._inflight: dict[int, tuple[SpooledMessage, float]] = {}  # message id -> (row, sent at)
        self._cursor = 0  # highest spool row id handed to this connection's client
        self._careful = False  # one message at a time: the last link ended with some unacked
        self._suspect: tuple[int, int] | None = None  # (row id, drops while it alone was in flight)
        self._refusal_in_link = False  # the broker refused a message on this link (it may drop it)
        self._refused_topics: dict[str, tuple[float, str]] = {}  # topic -> (held until, why)
        self._puback: list[tuple[int, ReasonCode]] = []  # from paho's callback, handled after loop()
        self._unsaved_acks: list[int] = []  # acked by the broker, not yet deleted (SQLite error)
        self._unsaved_refusals: list[tuple[SpooledMessage, int, str]] = []
        self._status_mid: int | None = None
        self._status_refused = False
        self._ready_since: float | None = None
        self._auth_blocked_until = 0.0
        self._last_error_log = 0.0
        # shared with other threads
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._final_state: DeviceState = "stopped"
        self._now: collections.deque[tuple[TopicKind, bytes]] = collections.deque(maxlen=16)
        self.last_error: str | None = None
        self.published = 0
        self.refused = 0
        self.connects = 0
        self._said_goodbye = False
        self._ever_ready = False
        self._goodbye_only = False  # the last connection at stop: say the final state, nothing else
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        v5 = cfg.protocol == 5
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"trapline-{self.device_id}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        apply_login(client, cfg)
        will_properties = None
        if v5:
            will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            will_properties.WillDelayInterval = cfg.will_delay_s
        client.will_set(
            self._status_topic,
            self._status_payload("offline", False),
            qos=1,
            retain=True,
            properties=will_properties,
        )
        client.max_inflight_messages_set(cfg.max_inflight + 1)  # + our status
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if v5:
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # a session that outlives short outages: the Will's delay needs one, and commands
            # published while the trap was away wait in it
            connect_properties.SessionExpiryInterval = cfg.session_expiry_s
            client.connect(
                cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=connect_properties
            )
        else:
            client.connect(cfg.host, cfg.port, cfg.keepalive_s)
        return client

    # --- paho callbacks (run inside loop(), on the mqtt thread) ---------------------------------
    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason}"
            if reason.value in _AUTH_FAILURES:
                self._auth_blocked_until = time.monotonic() + self.config.auth_retry_s
                log.error(
                    "MQTT broker %s refused our credentials (%s); not retrying for %.0f s",
                    self.config.host,
                    reason,
                    self.config.auth_retry_s,
                )
            else:
                log.warning("MQTT broker refused connection: %s", reason)
            return
        self.connects += 1
        log.info("connected to MQTT broker %s:%d", self.config.host, self.config.port)
        self._status_refused = False
        state: DeviceState = self._final_state if self._goodbye_only else "online"
        info = client.publish(self._status_topic, self._status_payload(state, True), qos=1, retain=True)
        self._status_mid = info.mid

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._ready.is_set():
            log.warning("disconnected from MQTT broker: %s", reason)
            self.last_error = f"disconnected: {reason}"
        self._ready.clear()

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        if mid == self._status_mid:
            self._status_mid = None
            if reason.is_failure:
                self._status_refused = True
                self.last_error = f"broker refused our status on {self._status_topic}: {reason}"
                log.error(
                    "MQTT broker refused our status on %s (%s): check the broker's ACL for this device"
                    " and the topic prefix; sending nothing until it accepts it",
                    self._status_topic,
                    reason,
                )
            else:
                self._ready_since = time.monotonic()
                self._ever_ready = True
                if self._goodbye_only:
                    self._said_goodbye = True
                else:
                    self._ready.set()
            return
        self._puback.append((mid, reason))

    # --- the mqtt thread -----------------------------------------------------------------------
    def _run(self) -> None:
        self._serve()
        if not self._said_goodbye and self._ever_ready:
            # stopped between two links: one short attempt, so the last word is not the Will
            self._goodbye_only = True
            try:
                self._serve_one_connection()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("final status not sent", exc_info=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            wait = self._auth_blocked_until - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            self._ready_since = None
            try:
                self._serve_one_connection()
            except Exception as exc:  # a bug must not end the link for good: log, back off, retry
                log.exception("MQTT link failed")
                self.last_error = f"MQTT link failed: {type(exc).__name__}: {exc}"
            self._ready.clear()
            if self._stop.is_set() or self._auth_blocked_until > time.monotonic():
                continue
            lasted = None if self._ready_since is None else time.monotonic() - self._ready_since
            delay = self._backoff.next_delay(lasted)
            log.info("reconnecting to MQTT broker in %.1f s", delay)
            self._stop.wait(delay)

    def _serve_one_connection(self) -> None:
        self._inflight.clear()
        self._cursor = 0
        self._puback.clear()
        self._status_mid, self._status_refused = None, False
        self._refusal_in_link = False
        try:
            client = self._make_client()
        except OSError as exc:  # refused, unreachable, DNS, TLS
            self.last_error = f"cannot reach MQTT broker {self.config.host}:{self.config.port}: {exc}"
            log.warning("%s", self.last_error)
            return
        deadline = time.monotonic() + _FINAL_STATUS_WAIT_S
        try:
            while True:
                rc = client.loop(_LOOP_TIMEOUT_S)
                self._save_acks()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return  # link lost or refused; on_disconnect has run
                if self._goodbye_only:
                    if self._said_goodbye or time.monotonic() > deadline:
                        client.disconnect()
                        client.loop(_LOOP_TIMEOUT_S)
                        return
                    continue
                if self._stop.is_set():
                    self._say_goodbye(client)
                    return
                if self._status_refused:
                    client.disconnect()
                    client.loop(_LOOP_TIMEOUT_S)
                    return
                if self._ready.is_set():
                    self._send_now(client)
                    self._send_more(client)
        finally:
            self._link_ended()
            with contextlib.suppress(Exception):
                client.disconnect()  # closes this client's sockets if paho has not

    def _link_ended(self) -> None:
        """What the unacknowledged messages of a finished link tell us (see the module doc)."""
        if (
            self._ready_since is not None
            and time.monotonic() - self._ready_since >= self.config.stable_after_s
        ):
            self._careful, self._suspect = False, None
        if not self._inflight:
            return
        now = time.monotonic()
        # a drop right after a refusal is the refusal's doing, not the message still in flight
        if self._careful and len(self._inflight) == 1 and not self._refusal_in_link:
            message, sent_at = next(iter(self._inflight.values()))
            if now - sent_at <= _SUSPECT_WINDOW_S:
                strikes = self._suspect[1] + 1 if self._suspect and self._suspect[0] == message.id else 1
                self._suspect = (message.id, strikes)
                log.warning(
                    "link dropped %.1f s after sending message %d on %s (%d of %d times)",
                    now - sent_at,
                    message.id,
                    message.topic,
                    strikes,
                    _SUSPECT_STRIKES,
                )
                if strikes >= _SUSPECT_STRIKES:
                    why = f"the broker dropped the connection each time it got it ({strikes} times)"
                    self._unsaved_refusals.append((message, 0, why))
                    self._suspect = None
                    self._inflight.clear()
                    self._save_acks()
        self._careful = True
        self._inflight.clear()

    def _save_acks(self) -> None:
        """Match PUBACKs to spool rows: delete the accepted, dead-letter the refused."""
        for mid, reason in self._puback:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # not ours (heartbeat), or already handled
            message = entry[0]
            if self._suspect and self._suspect[0] == message.id:
                self._suspect = None
            if reason.is_failure:
                self._refusal_in_link = True
                self._unsaved_refusals.append((message, reason.value, str(reason)))
            else:
                self._unsaved_acks.append(message.id)
        self._puback.clear()
        try:
            if self._unsaved_acks:
                self.spool.ack(self._unsaved_acks)
                self.published += len(self._unsaved_acks)
                self._unsaved_acks.clear()
            while self._unsaved_refusals:
                self._dead_letter(*self._unsaved_refusals[0])
                self._unsaved_refusals.pop(0)
        except SpoolError as exc:  # kept and retried on the next turn; the link stays up
            self._spool_trouble(exc)

    def _dead_letter(self, message: SpooledMessage, code: int, reason: str) -> None:
        why = f"broker refused it: {reason} (0x{code:02X})" if code else f"broker refused it: {reason}"
        self.refused += self.spool.dead_letter([message.id], why)
        log.error(
            "broker refused spooled message %d on %s (%s): moved to dead letters",
            message.id,
            message.topic,
            reason,
        )
        self.last_error = f"broker refused a message on {message.topic}: {reason}"
        if code in _TOPIC_REFUSED:
            held = f"not sent: the broker refused this topic at {time.strftime('%H:%M:%S')}: {why}"
            self._refused_topics[message.topic] = (time.monotonic() + _REFUSED_TOPIC_HOLD_S, held)
            in_flight = {m.id for m, _ in self._inflight.values()}
            more = self.spool.dead_letter_topic(message.topic, why, exclude=in_flight)
            if more:
                self.refused += more
                log.error("moved %d more queued message(s) on %s to dead letters", more, message.topic)

    def _send_more(self, client: mqtt.Client) -> None:
        limit = 1 if self._careful else self.config.max_inflight
        if self._careful and time.monotonic() - (self._ready_since or 0.0) >= self.config.stable_after_s:
            self._careful, self._suspect = False, None
            limit = self.config.max_inflight
        room = limit - len(self._inflight)
        if room <= 0:
            return
        try:
            batch = self.spool.get_batch(self._cursor, room)
        except Exception as exc:  # noqa: BLE001 - any spool trouble: the link stays, we retry
            self._spool_trouble(exc)
            return
        now = time.monotonic()
        for message in batch:
            held_until, why = self._refused_topics.get(message.topic, (0.0, ""))
            if now < held_until:
                try:
                    self.refused += self.spool.dead_letter([message.id], why)
                except SpoolError as exc:
                    self._spool_trouble(exc)
                    return
                self._cursor = message.id
                continue
            info = client.publish(message.topic, message.payload, qos=message.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # the link just dropped: the next one sends it from the spool
            self._inflight[info.mid] = (message, time.monotonic())
            self._cursor = message.id

    def _send_now(self, client: mqtt.Client) -> None:
        while self._now:
            kind, payload = self._now.popleft()
            spec = TOPICS[kind]
            client.publish(
                topic(self.config.prefix, self.device_id, kind), payload, qos=spec.qos, retain=spec.retain
            )

    def _say_goodbye(self, client: mqtt.Client) -> None:
        """Final status (a clean stop does not trigger the Last Will), then a clean disconnect."""
        if self._ready.is_set():
            info = client.publish(
                self._status_topic, self._status_payload(self._final_state, True), qos=1, retain=True
            )
            deadline = time.monotonic() + _FINAL_STATUS_WAIT_S
            while not info.is_published() and time.monotonic() < deadline:
                if client.loop(_LOOP_TIMEOUT_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self._save_acks()
            self._said_goodbye = info.is_published()
        client.disconnect()
        client.loop(_LOOP_TIMEOUT_S)
        self._save_acks()

    def _spool_trouble(self, exc: Exception) -> None:
        self.last_error = f"spool: {exc}"
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error("spool trouble in the MQTT link (retrying): %s", exc)
        self._stop.wait(1.0)

    # --- public -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.config.protocol == 311:
            log.warning(
                "MQTT 3.1.1: a broker that refuses a message still acknowledges it, so such a"
                " message is lost unnoticed; use protocol 5 for delivery guarantees"
            )
        self._thread.start()

    def notify(self) -> None:
        """New messages are in the spool. Nothing to do: the mqtt thread looks every 0.1 s."""

    @property
    def connected(self) -> bool:
        """Connected and our status accepted: the spool is being sent."""
        return self._ready.is_set()

    @property
    def alive(self) -> bool:
        """The mqtt thread runs (false before start and after stop)."""
        return self._thread.is_alive()

    def publish_now(self, kind: TopicKind, payload: bytes) -> bool:
        """Publish outside the spool (heartbeats): only while connected, best effort."""
        if not self._ready.is_set():
            return False
        self._now.append((kind, payload))
        return True

    def stop(self, final_state: DeviceState = "stopped", timeout_s: float = 10.0) -> None:
        """Publish the final status, then disconnect (the mqtt thread does both)."""
        self._final_state = final_state
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
