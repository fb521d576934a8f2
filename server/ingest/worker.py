"""MQTT ingest worker: subscribe, validate, store in batches, acknowledge only after the commit.

The session is persistent (MQTT 5, clean_start off, long expiry), so messages published while the
worker is down wait in the broker. Acknowledgements are manual: a message is PUBACKed only after
the transaction holding it (or its dead letter) has committed, so a crash between receive and
commit loses nothing (the broker redelivers; idempotent storage makes the second copy a no-op).
One worker subscribes directly (Mosquitto queues for it across a broker restart); several share
the load through `$share/<group>/...` when `mqtt_share_group` is set.

Three threads: paho's network thread receives (a socket read at a time, see mqtt_speedup), the
batching thread validates a batch while the writer thread stores and acknowledges the one before
(batches are stored and acknowledged in the order received). Any of them dying ends the process
with status 1 (systemd restarts it; nothing unacknowledged is lost).

No message can stop ingest. Validation turns anything a trap sends into a typed message or a
reason. A batch the database refuses is tried again message by message, so one poison message
becomes a dead letter and the others are stored; a database that does not answer at all is
waited for (nothing is acknowledged meanwhile, so nothing is lost). Flow control: the broker may
send at most `ingest_receive_maximum` unacknowledged messages (MQTT 5 Receive Maximum). Mosquitto
2.0.11 was measured to stop enforcing it once acknowledgements flow (with paho's own acks too); the
worker then stops reading at twice the limit (TCP holds the broker back), so its memory stays
bounded either way.
"""

from __future__ import annotations

import fcntl
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from trapline.credentials import reveal
from trapline.edge.health import sd_notify, watchdog_interval_s
from trapline.server.core.config import SQLITE_PREFIX, ServerSettings
from trapline.server.db import transaction
from trapline.server.ingest import mqtt_speedup
from trapline.server.ingest.store import DeadLetterIn, StoreResult, store_batch
from trapline.server.ingest.validate import Accepted, Rejected, validate

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 30.0
TRANSIENT_RETRIES = 5  # a batch failing this often for a database that answers is looked into
HAND_OVER_AT = 256  # messages the network thread collects before it hands them over anyway


@dataclass
class IngestCounters:
    received: int = 0
    stored_frames: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    db_errors: int = 0  # failed database writes (the batch or message was tried again)
    isolated_batches: int = 0  # batches the database refused, stored message by message
    dropped_qos0: int = 0  # heartbeats dropped because the queue was full (best effort)
    unexpected_errors: int = 0


class _Incoming(NamedTuple):  # a tuple: built for every message, in the network thread
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: datetime
    generation: int  # which connection it came on: a packet id means nothing on the next one


@dataclass(frozen=True)
class _Validated:
    batch: list[_Incoming]
    accepted: list[Accepted]
    dead: list[DeadLetterIn]


def subscriptions(settings: ServerSettings) -> list[str]:
    base = [f"{settings.mqtt_prefix}/+/{kind}" for kind in settings.ingest_topics]
    if settings.mqtt_share_group:
        return [f"$share/{settings.mqtt_share_group}/{t}" for t in base]
    return base


class WriterTurn:
    """Ingest workers sharing one SQLite database take turns through a file lock.

    SQLite has one writer at a time. Left to its own busy handler, a waiting worker sleeps in
    growing steps (up to 100 ms) and the database sits idle while both wait: measured, two workers
    stored 30 % less than one. An exclusive `flock` wakes the waiting worker the moment the other
    commits, and each worker decodes and validates its next batch while the other writes.
    PostgreSQL needs no turns (a no-op there)."""

    def __init__(self, path: Path | None) -> None:
        self._file = None
        if path is not None:
            try:
                self._file = path.open("a")
            except OSError as exc:  # a read-only folder: SQLite's own locking still applies
                log.warning("no ingest write lock at %s (%s)", path, exc)

    @classmethod
    def for_database(cls, url: str) -> WriterTurn:
        if url.startswith(SQLITE_PREFIX) and ":memory:" not in url:
            return cls(Path(url.removeprefix(SQLITE_PREFIX) + ".ingest-lock"))
        return cls(None)

    def __enter__(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database is unreachable or out of resources (retry the same work
    later), False when it refused this data (the message is the problem)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


class IngestWorker:
    def __init__(self, settings: ServerSettings, sessions: sessionmaker[Session]) -> None:
        mqtt_speedup.apply()
        self.settings = settings
        self.sessions = sessions
        self.counters = IngestCounters()
        # the network thread hands messages over a socket read at a time (a list per read: one
        # queue operation, not one per message). Bounded: QoS 1 messages by the broker's flow
        # control and, since Mosquitto does not always keep to it, by `_queue_limit`; QoS 0
        # heartbeats by dropping when full
        self._incoming: queue.SimpleQueue[list[_Incoming]] = queue.SimpleQueue()
        self._arriving: list[_Incoming] = []  # the network thread's, until handed over
        self._handed = 0  # messages put on the queue (written by the network thread only)
        self._taken = 0  # messages taken from it (written by the batching thread only)
        self._carried: list[_Incoming] = []  # taken, for the next batch (this one was full)
        self._batched = 0  # messages put in batches (batching thread only)
        self._finished = 0  # of those, acknowledged or given up when stopping (writer only)
        self._queue_limit = 2 * settings.ingest_receive_maximum
        self._stop = threading.Event()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._network: threading.Thread | None = None
        # validating the next batch overlaps storing this one: while the writer waits for the
        # database (measured: a quarter of the time in a reconnect storm), the batching thread
        # works; one batch waits for the writer at most
        self._validated: queue.Queue[_Validated | None] = queue.Queue(maxsize=1)
        self._writer: threading.Thread | None = None
        self._writer_turn = WriterTurn.for_database(settings.database_url)
        self._watchdog_s: float | None = None
        self._watchdog_due = 0.0
        self.connected = threading.Event()
        self.client = mqtt_speedup.BufferedClient(
            CallbackAPIVersion.VERSION2, client_id=settings.mqtt_client_id, protocol=mqtt.MQTTv5
        )
        self.client.manual_ack_set(True)
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, reveal(settings.mqtt_password))
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.after_read = self._hand_over

    # --- MQTT callbacks (the network thread) ------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the ingest worker: %s", reason)
            return
        with self._ack_lock:
            self._generation += 1
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
        item = _Incoming(msg.mid, msg.qos, msg.topic, bytes(msg.payload), datetime.now(UTC), self._generation)
        if self.queued + len(self._arriving) >= self._queue_limit:
            if item.qos == 0:  # best effort by contract
                self.counters.dropped_qos0 += 1
                return
            # only a broker that ignores our Receive Maximum gets here: stop reading until there
            # is room (TCP then holds the broker back)
            self._hand_over()
            while self.queued >= self._queue_limit and not self._stop.is_set():
                time.sleep(0.01)
        self._arriving.append(item)
        if len(self._arriving) >= HAND_OVER_AT:
            self._hand_over()

    def _hand_over(self) -> None:
        """Put what has arrived on the queue (network thread)."""
        if self._arriving:
            arrived, self._arriving = self._arriving, []
            self._handed += len(arrived)
            self._incoming.put(arrived)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self.settings.ingest_receive_maximum
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=30,
            clean_start=False,
            properties=props,
        )
        self._network = threading.Thread(
            target=self.client.loop_forever,
            kwargs={"retry_first_connection": True},
            name="ingest-mqtt",
            daemon=True,
        )
        self._network.start()

    @property
    def queued(self) -> int:
        """Messages received and not yet taken into a batch."""
        return self._handed - self._taken + len(self._carried)

    @property
    def held(self) -> int:
        """Messages received and not yet acknowledged (queued, being validated or stored)."""
        return self.queued + self._batched - self._finished

    @property
    def healthy(self) -> bool:
        """The MQTT network thread is running (it reconnects by itself; if it died, nothing will),
        and so is the writer once started."""
        network = self._network is not None and self._network.is_alive()
        return network and (self._writer is None or self._writer.is_alive())

    def _next_batch(self) -> list[_Incoming]:
        """Up to ingest_batch_size messages, waiting at most ingest_batch_seconds for them."""
        size = self.settings.ingest_batch_size
        deadline = time.monotonic() + self.settings.ingest_batch_seconds
        batch: list[_Incoming] = []
        arrived, self._carried = self._carried, []
        while True:
            # a message that came on a connection that is gone is dropped: the broker sends it
            # again on this one
            batch += [item for item in arrived if item.generation == self._generation]
            if len(batch) >= size:
                batch, self._carried = batch[:size], batch[size:]
                return batch
            if self._stop.is_set():
                return batch
            try:  # what is there without waiting; then wait until the deadline for more
                arrived = self._incoming.get_nowait()
            except queue.Empty:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return batch
                try:
                    arrived = self._incoming.get(timeout=timeout)
                except queue.Empty:
                    return batch
            self._taken += len(arrived)

    # --- storing -----------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> None:
        self._wait(min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**attempt))

    def _wait(self, seconds: float) -> None:
        """Sleep, still telling systemd we are alive: waiting for a database is not a hang."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._feed_watchdog()
            self._stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _commit(self, accepted: list[Accepted], dead: list[DeadLetterIn]) -> StoreResult:
        with self._writer_turn, transaction(self.sessions) as session:
            return store_batch(
                session, accepted, dead, self.settings.auto_register, self.settings.heartbeat_history()
            )

    def _database_answers(self) -> bool:
        try:
            with self.sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "no"
            return False

    def _store(self, accepted: list[Accepted], dead: list[DeadLetterIn]) -> StoreResult | None:
        """Commit the batch; None when stopping before it could be (not acknowledged then)."""
        attempt = 0
        while not self._stop.is_set():
            try:
                return self._commit(accepted, dead)
            except Exception as exc:  # noqa: BLE001 - sorted out below, never fatal
                self.counters.db_errors += 1
                # a busy or unreachable database: the same batch again, later (a lock held by
                # another writer, a restart, a full disk); never a reason to blame a message
                if database_unavailable(exc) and (
                    attempt < TRANSIENT_RETRIES or not self._database_answers()
                ):
                    log.error("database unavailable (%s); batch of %d waits", _describe(exc), len(accepted))
                    self._backoff(attempt)
                    attempt += 1
                    continue
                # the database answers but refused the batch: find the message(s) it refuses
                log.warning("database refused a batch (%s); storing it message by message", _describe(exc))
                self.counters.isolated_batches += 1
                return self._store_one_by_one(accepted, dead)
        return None

    def _store_one_by_one(self, accepted: list[Accepted], dead: list[DeadLetterIn]) -> StoreResult | None:
        totals = [0, 0, 0]
        work: list[Accepted | DeadLetterIn] = [*accepted, *dead]
        for item in work:
            result = self._store_one(item)
            if result is None:
                return None
            totals = [totals[0] + result.new_frames, totals[1] + result.duplicate_frames,
                      totals[2] + result.dead_letters]  # fmt: skip
        return StoreResult(*totals)

    def _store_one(self, item: Accepted | DeadLetterIn) -> StoreResult | None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if isinstance(item, Accepted):
                    return self._commit([item], [])
                return self._commit([], [item])
            except Exception as exc:  # noqa: BLE001
                self.counters.db_errors += 1
                transient = database_unavailable(exc)
                if transient and (attempt < 3 or not self._database_answers()):
                    self._backoff(attempt)
                    attempt += 1
                    continue
                if isinstance(item, Accepted):
                    reason = f"the database refused it: {_describe(exc)}"
                    log.warning("dead letter on %s: %s", item.topic[:120], reason)
                    letter = DeadLetterIn(item.topic, reason, item.payload, item.received_at)
                    try:
                        return self._commit([], [letter])
                    except Exception as again:  # noqa: BLE001
                        exc = again  # not even the dead letter: the database is the problem
                log.error("cannot store on %s (%s); trying again", _topic_of(item), _describe(exc))
                self._backoff(attempt)
                attempt += 1
        return None

    def _validate(self, batch: list[_Incoming]) -> _Validated:
        """Every message of `batch` as a typed message or a dead letter (the batching thread)."""
        accepted: list[Accepted] = []
        dead: list[DeadLetterIn] = []
        for item in batch:
            try:
                verdict = validate(
                    self.settings.mqtt_prefix,
                    item.topic,
                    item.payload,
                    self.settings.max_payload_bytes,
                    item.received_at,
                )
            except Exception as exc:  # noqa: BLE001 - validate catches everything; belt and braces
                verdict = Rejected(f"unreadable: {_describe(exc)}")
            if isinstance(verdict, Rejected):
                log.warning("dead letter on %s: %s", item.topic[:120], verdict.reason)
                dead.append(DeadLetterIn(item.topic, verdict.reason, item.payload, item.received_at))
            else:
                accepted.append(verdict)
        return _Validated(batch, accepted, dead)

    def _validated_or_kept(self, batch: list[_Incoming]) -> _Validated:
        """`_validate`, or on a bug in it every message of the batch kept as a dead letter."""
        try:
            return self._validate(batch)
        except Exception as exc:  # a bug, not the message: keep every message, go on
            self.counters.unexpected_errors += 1
            log.exception("unexpected error validating a batch of %d; kept as dead letters", len(batch))
            return _Validated(batch, [], _failed(batch, exc))

    def _store_and_acknowledge(self, work: _Validated) -> None:
        """Store one validated batch, then acknowledge it in the order received (the writer)."""
        result = self._store(work.accepted, work.dead)
        if result is None:
            return  # stopping: not acknowledged, the broker redelivers to the next worker
        self.counters.received += len(work.batch)
        self.counters.stored_frames += result.new_frames
        self.counters.duplicates += result.duplicate_frames
        self.counters.dead_letters += result.dead_letters
        self._acknowledge(work.batch)

    def _write_batches(self) -> None:
        """The writer thread: validated batches, stored and acknowledged one after the other."""
        while (work := self._validated.get()) is not None:
            try:
                self._store_and_acknowledge(work)
            except Exception as exc:  # a bug, not the database: keep every message, go on
                self.counters.unexpected_errors += 1
                log.exception("unexpected error in a batch of %d; kept as dead letters", len(work.batch))
                self._keep_as_dead_letters(work.batch, exc)
            finally:
                self._finished += len(work.batch)

    def _hand_to_writer(self, work: _Validated | None) -> None:
        """Queue `work` for the writer, waiting while it still stores the batch before; None: the
        writer finishes what it holds (unacknowledged when stopping) and ends."""
        while self._writer is not None and self._writer.is_alive():
            try:
                self._validated.put(work, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set() and work is not None:
                    return  # not acknowledged: the broker sends it again
                self._feed_watchdog()

    def _acknowledge(self, batch: list[_Incoming]) -> None:
        # under the lock: a reconnect between the check and the ack would ack someone else
        with self._ack_lock:
            current = [item for item in batch if item.qos > 0 and item.generation == self._generation]
            self.client.ack_many(item.mid for item in current if item.qos == 1)
            for item in current:
                if item.qos == 2:  # never subscribed at QoS 2; paho's own path if it happens
                    self.client.ack(item.mid, item.qos)

    def _keep_as_dead_letters(self, batch: list[_Incoming], exc: Exception) -> None:
        for letter in _failed(batch, exc):
            if self._store_one(letter) is None:
                return  # stopping: unacknowledged, redelivered later
            self.counters.dead_letters += 1
        self._acknowledge(batch)

    def _feed_watchdog(self) -> None:
        if self._watchdog_s is not None and time.monotonic() >= self._watchdog_due and self.healthy:
            sd_notify("WATCHDOG=1")
            self._watchdog_due = time.monotonic() + self._watchdog_s

    def run(self) -> int:
        """Run until stop(); 0 after a clean stop, 1 when a thread of ours died (restart us)."""
        self._watchdog_s = watchdog_interval_s()
        self._writer = threading.Thread(target=self._write_batches, name="ingest-writer", daemon=True)
        self._writer.start()
        self.start()
        # ready once running: a broker that is down is waited for, restarting would not help
        sd_notify("READY=1\nSTATUS=connecting to the broker")
        subscribed = False
        try:
            while not self._stop.is_set():
                if not self.healthy:
                    log.critical("an ingest thread died; exiting so that we are restarted")
                    return 1
                if subscribed != self.connected.is_set():
                    subscribed = not subscribed
                    sd_notify("STATUS=" + ("subscribed" if subscribed else "waiting for the broker"))
                self._feed_watchdog()
                batch = self._next_batch()
                if batch:
                    self._batched += len(batch)
                    self._hand_to_writer(self._validated_or_kept(batch))
            return 0
        finally:
            sd_notify("STOPPING=1")
            self._stop.set()
            self._hand_to_writer(None)
            if self._writer is not None:
                self._writer.join(30)
            # the last acknowledgements out before the DISCONNECT (else they are sent again)
            deadline = time.monotonic() + 2
            network = self._network
            while self.client.want_write() and network and network.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.client.disconnect()
            if self._network is not None:
                self._network.join(10)
            log.info("ingest stopped: %s", self.counters)

    def stop(self) -> None:
        self._stop.set()


def _failed(batch: list[_Incoming], exc: Exception) -> list[DeadLetterIn]:
    """The batch's messages as dead letters of a failure that is ours, not theirs."""
    reason = f"ingest failed on this batch: {_describe(exc)}"
    return [DeadLetterIn(item.topic, reason, item.payload, item.received_at) for item in batch]


def _topic_of(item: Accepted | DeadLetterIn) -> str:
    return item.topic[:120]
