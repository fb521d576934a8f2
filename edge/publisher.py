"""MQTT link of the trap: drains the spool at QoS 1, deleting each message only after its PUBACK.

Availability follows the contract: a retained `online` status on every connect, a retained
`offline` Last Will, and `stopped` on a clean shutdown. Reconnects use paho's capped exponential
backoff; refused credentials stop the retries for `auth_retry_s` instead of hammering the broker.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from trapline.contracts import TOPICS, DeviceState, TopicKind, topic
from trapline.credentials import reveal
from trapline.edge.config import MqttConfig
from trapline.edge.spool import DetectionSpool

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "your credentials are wrong": retrying soon will not help
_AUTH_FAILURES = {0x86, 0x87, 0x8C}


class MqttPublisher:
    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        spool: DetectionSpool,
        status_payload: Callable[[DeviceState], bytes],
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.spool = spool
        self._status_payload = status_payload
        self._status_topic = topic(config.prefix, device_id, "status")
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # MQTT message id -> spool row id
        self._cursor = 0  # highest spool row id handed to paho since the last (re)connect
        self._connected = threading.Event()
        self._reset_needed = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._auth_blocked_until = 0.0
        self.last_error: str | None = None
        self.published = 0
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._drain_loop, name="spool-drain", daemon=True)

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        protocol = mqtt.MQTTv5 if cfg.protocol == 5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"trapline-{self.device_id}",
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, reveal(cfg.password()))
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(self._status_topic, self._status_payload("offline"), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=cfg.backoff_min_s, max_delay=cfg.backoff_max_s)
        client.max_inflight_messages_set(cfg.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # --- paho callbacks (network thread) --------------------------------------------------------
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
                client.disconnect()
            else:
                log.warning("MQTT broker refused connection: %s", reason)
            return
        log.info("connected to MQTT broker %s:%d", self.config.host, self.config.port)
        client.publish(self._status_topic, self._status_payload("online"), qos=1, retain=True)
        self._reset_needed.set()
        self._connected.set()
        self._wake.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connected.is_set():
            log.warning("disconnected from MQTT broker: %s", reason)
            self.last_error = f"disconnected: {reason}"
        self._connected.clear()
        self._reset_needed.set()

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        self._acks.put((mid, not reason.is_failure))
        self._wake.set()

    # --- the drain loop (own thread) ------------------------------------------------------------
    def _handle_acks(self) -> None:
        acked = []
        while True:
            try:
                mid, ok = self._acks.get_nowait()
            except queue.Empty:
                break
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue  # a retransmission from before a reconnect
            if ok:
                acked.append(row_id)
            else:
                # e.g. "not authorized" for this topic: keep it, it is sent again after reconnect
                self.last_error = f"broker rejected message {row_id}"
                log.error("broker rejected spooled message %d; keeping it", row_id)
        self.spool.ack(acked)
        self.published += len(acked)

    def _send_more(self) -> None:
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for message in self.spool.get_batch(self._cursor, room):
            info = self._client.publish(message.topic, message.payload, qos=message.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection just dropped: the reset after reconnect resends from the start
            self._inflight[info.mid] = message.id
            self._cursor = message.id

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._reset_needed.is_set():
                # unacknowledged messages are sent again: duplicates are harmless (idempotent ids)
                self._reset_needed.clear()
                self._inflight.clear()
                self._cursor = 0
            self._handle_acks()
            if self._connected.is_set():
                self._send_more()
            elif self._auth_blocked_until and time.monotonic() > self._auth_blocked_until:
                self._auth_blocked_until = 0.0
                self._restart_network()

    def _restart_network(self) -> None:
        log.info("retrying MQTT connection to %s:%d", self.config.host, self.config.port)
        self._client.loop_stop()
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()

    # --- public -------------------------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        self._thread.start()

    def notify(self) -> None:
        """New messages are in the spool."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish_now(self, kind: TopicKind, payload: bytes) -> bool:
        """Publish outside the spool (heartbeats): only when connected, best effort."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(
            topic(self.config.prefix, self.device_id, kind),
            payload,
            qos=TOPICS[kind].qos,
            retain=TOPICS[kind].retain,
        )
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def stop(self, final_state: DeviceState = "stopped", timeout_s: float = 5.0) -> None:
        """Publish the final status (a clean stop does not trigger the Last Will), then disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._connected.is_set():
            info = self._client.publish(
                self._status_topic, self._status_payload(final_state), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish final status: %s", exc)
            self._handle_acks()
        self._client.disconnect()
        self._client.loop_stop()
