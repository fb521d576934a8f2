"""MQTT ingest worker: subscribe, validate, store in batches, acknowledge only after the commit.

The session is persistent (MQTT 5, clean_start off, long expiry), so messages published while the
worker is down wait in the broker. Acknowledgements are manual: a message is PUBACKed only after
the transaction holding it has committed, so a crash between receive and commit loses nothing
(the broker redelivers; the detection id makes the second copy a no-op). Several workers share the
load through `$share/<group>/...` subscriptions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import UPLINK_KINDS
from trapline.credentials import reveal
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch
from trapline.server.ingest.validate import Accepted, Rejected, validate

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass
class IngestCounters:
    received: int = 0
    stored_frames: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    db_errors: int = 0


@dataclass(frozen=True)
class _Incoming:
    mid: int
    qos: int
    topic: str
    payload: bytes


def subscriptions(settings: ServerSettings) -> list[str]:
    base = [f"{settings.mqtt_prefix}/+/{kind}" for kind in UPLINK_KINDS]
    if settings.mqtt_share_group:
        return [f"$share/{settings.mqtt_share_group}/{t}" for t in base]
    return base


class IngestWorker:
    def __init__(self, settings: ServerSettings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.counters = IngestCounters()
        self._incoming: queue.SimpleQueue[_Incoming] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.mqtt_client_id, protocol=mqtt.MQTTv5
        )
        self.client.manual_ack_set(True)
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, reveal(settings.mqtt_password))
        self.client.reconnect_delay_set(1, 30)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the ingest worker: %s", reason)
            return
        client.subscribe([(t, 1) for t in subscriptions(self.settings)])
        log.info("ingest connected (session present: %s)", getattr(flags, "session_present", "?"))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused ingest subscriptions: %s", ", ".join(failed))
            return
        # from here on the broker keeps every message for us, even while we are down
        log.info("ingest subscribed to %d topics", len(reasons))
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("ingest disconnected: %s", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._incoming.put(_Incoming(msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def _next_batch(self) -> list[_Incoming]:
        batch: list[_Incoming] = []
        deadline = time.monotonic() + self.settings.ingest_batch_seconds
        while len(batch) < self.settings.ingest_batch_size and not self._stop.is_set():
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(self._incoming.get(timeout=timeout))
            except queue.Empty:
                break
        return batch

    def process(self, batch: list[_Incoming]) -> None:
        """Validate and store one batch, then acknowledge it; retried until the database takes it."""
        accepted: list[Accepted] = []
        dead: list[tuple[str, str, bytes]] = []
        for item in batch:
            verdict = validate(
                self.settings.mqtt_prefix, item.topic, item.payload, self.settings.max_payload_bytes
            )
            if isinstance(verdict, Rejected):
                log.warning("dead letter on %s: %s", item.topic[:120], verdict.reason)
                dead.append((item.topic, verdict.reason, item.payload))
            else:
                accepted.append(verdict)
        while not self._stop.is_set():
            try:
                with transaction(self.sessions) as session:
                    result = store_batch(
                        session,
                        accepted,
                        dead,
                        self.settings.auto_register,
                        self.settings.heartbeat_history(),
                    )
                break
            except SQLAlchemyError as exc:
                self.counters.db_errors += 1
                log.error("database write failed (%s); retrying the batch in 2 s", str(exc)[:300])
                self._stop.wait(2)
        else:
            return  # stopping: not acknowledged, the broker redelivers to the next worker
        self.counters.received += len(batch)
        self.counters.stored_frames += result.new_frames
        self.counters.duplicates += result.duplicate_frames
        self.counters.dead_letters += result.dead_letters
        for item in batch:
            if item.qos > 0:
                self.client.ack(item.mid, item.qos)

    def run(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if batch:
                    self.process(batch)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            log.info("ingest stopped: %s", self.counters)

    def stop(self) -> None:
        self._stop.set()
