"""Durable store-and-forward spool: every outgoing result waits here until the broker's PUBACK.

SQLite in WAL mode. `put` writes the messages, the "this frame is done" mark and the agent's
counters in one transaction, so a crash either loses nothing or redoes the frame (never both
publishes it and forgets it). Rows are deleted only by `ack`. The spool is bounded: when full,
`drop_oldest` drops the oldest empty-frame messages first, then the oldest of the rest;
`drop_newest` refuses new messages. Both count what they dropped.

A message the broker refuses for good (MQTT 5 PUBACK >= 0x80), or one the trap may no longer
publish, moves to the `dead_letters` table: kept (bounded), counted, never sent in a loop, and
put back in the queue by `requeue_dead_letters` once the cause is fixed.

A spool that SQLite cannot read (corrupt or truncated file, failed `quick_check`) is moved aside,
never deleted, and a fresh one is started: a trap must not crash-loop until someone visits it.
Each spool has a random installation id, made when it is created: message ids carry it, so a
reinstalled trap never reuses the ids of its previous life.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trapline.contracts import MediaKind

log = logging.getLogger(__name__)

DropPolicy = Literal["drop_oldest", "drop_newest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_drop_order ON outbox (priority, id);
CREATE TABLE IF NOT EXISTS processed (key TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_age ON processed (at);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    detection_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_INSTALLATION_ID = "installation_id"
_HOME = "home"
_CORRUPT_TAG = ".corrupt-"
# an existing spool made before incremental vacuum is converted at start only while this small
_CONVERT_BELOW_BYTES = 64 * 1024 * 1024
# SQLite primary result codes that mean "this file is damaged" (not busy, full or unreadable)
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

# the picture kind sent last and dropped first (a sample of below-threshold boxes)
LOW_PRIORITY_UPLOAD: MediaKind = "candidate"

# priorities: what to drop first when the spool is full
PRIORITY_EMPTY_FRAME = 0
PRIORITY_NORMAL = 1


class SpoolError(RuntimeError):
    """The spool could not store a message (disk full, I/O error); nothing was half-written."""


class SpoolCorruptError(SpoolError):
    """SQLite cannot read the spool file: it is damaged, truncated or not a database."""


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """An open, checked spool database; SpoolCorruptError when the file is damaged."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:  # cannot open (permissions, a folder): nothing is damaged
        raise SpoolError(f"spool {path}: {exc}") from exc
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        problems = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise SpoolCorruptError("; ".join(problems[:3]))
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        db.close()
        if _is_corruption(exc):
            raise SpoolCorruptError(str(exc)) from exc
        raise SpoolError(f"spool {path}: {exc}") from exc
    except SpoolCorruptError:
        db.close()
        raise
    return db


def _move_aside(path: Path) -> Path:
    """Rename a damaged spool (with its WAL and picture folder) out of the way; never delete it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = path.with_name(f"{path.name}{_CORRUPT_TAG}{stamp}")
    number = 1
    while base.exists():
        number += 1
        base = path.with_name(f"{path.name}{_CORRUPT_TAG}{stamp}-{number}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, base.with_name(base.name + suffix))
    uploads = path.parent / "uploads"
    if uploads.is_dir() and any(uploads.iterdir()):
        # its pictures belong to rows of the damaged file: keep them with it
        os.replace(uploads, path.parent / f"uploads{_CORRUPT_TAG}{base.name.rsplit(_CORRUPT_TAG, 1)[1]}")
    return base


def corrupt_spools(path: Path) -> list[Path]:
    """Damaged spools moved aside beside `path`, oldest first."""
    return sorted(
        p for p in path.parent.glob(f"{path.name}{_CORRUPT_TAG}*") if not p.name.endswith(("-wal", "-shm"))
    )


@dataclass(frozen=True)
class OutboundMessage:
    topic: str
    payload: bytes
    qos: int = 1
    priority: int = PRIORITY_NORMAL


@dataclass(frozen=True)
class PendingUpload:
    """A picture already written to `path` (in the spool's folder), waiting for the server."""

    detection_id: str
    kind: str
    path: Path
    bytes: int


@dataclass(frozen=True)
class QueuedUpload(PendingUpload):
    id: int


@dataclass(frozen=True)
class SpooledMessage:
    id: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    topic: str
    payload: bytes
    reason: str
    at: float


class DetectionSpool:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        policy: DropPolicy = "drop_oldest",
        synchronous: Literal["full", "normal"] = "full",
        dead_letter_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.policy = policy
        self.dead_letter_max_bytes = dead_letter_max_bytes
        # why a damaged spool was replaced at this start (None: it was fine)
        self.reset_reason: str | None = None
        self._lock = threading.Lock()
        try:
            self._db = _connect(path, synchronous)
        except SpoolCorruptError as exc:
            aside = _move_aside(path)
            self.reset_reason = f"spool was unreadable ({exc}); moved aside to {aside.name}, started afresh"
            log.error("spool %s: %s", path, self.reset_reason)
            self._db = _connect(path, synchronous)
        self.resets = len(corrupt_spools(path))
        self._convert_to_incremental_vacuum()
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(row[0]), int(row[1])
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM dead_letters"
        ).fetchone()
        self._dead_count, self._dead_bytes = int(row[0]), int(row[1])
        self.dropped = int(self.get_state("dropped") or 0)
        installation = self.get_state(_INSTALLATION_ID)
        if installation is None:
            installation = secrets.token_hex(6)
            self.set_state({_INSTALLATION_ID: installation})
            log.info("spool %s: new installation id %s", path, installation)
        self.installation_id = installation
        if self._depth:
            log.info("spool %s holds %d unsent messages (%d bytes)", path, self._depth, self._bytes)
        if self._dead_count:
            log.warning("spool %s holds %d dead letter(s) the broker refused", path, self._dead_count)

    def _convert_to_incremental_vacuum(self) -> None:
        """Spools made before incremental vacuum: convert once, while the file is small."""
        if int(self._db.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            return
        if self.path.stat().st_size > _CONVERT_BELOW_BYTES:
            return  # a full VACUUM of a big file on an SD card: wait for a start when it has drained
        try:
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("VACUUM")
        except sqlite3.Error as exc:  # a full disk: the spool still works, it just does not shrink
            log.warning("spool %s: could not switch to incremental vacuum: %s", self.path, exc)

    # --- what the agent does -------------------------------------------------------------------
    @property
    def uploads_dir(self) -> Path:
        return self.path.parent / "uploads"

    def put(
        self,
        messages: Sequence[OutboundMessage],
        processed_key: str | None = None,
        state: dict[str, str] | None = None,
        uploads: Sequence[PendingUpload] = (),
    ) -> None:
        """Store messages (and pictures to upload), mark `processed_key` done and save `state`,
        all or nothing."""
        size = sum(len(m.payload) for m in messages)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                dropped_now, dropped_bytes, refused = self._make_room(size)
                if not refused:
                    self._db.executemany(
                        "INSERT INTO outbox (topic, payload, qos, priority, created) VALUES (?, ?, ?, ?, ?)",
                        [(m.topic, m.payload, m.qos, m.priority, time.time()) for m in messages],
                    )
                dropped_total = self.dropped + dropped_now + (len(messages) if refused else 0)
                values = dict(state or {})
                if dropped_total != self.dropped:
                    values["dropped"] = str(dropped_total)
                self._db.executemany(
                    "INSERT INTO state (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    list(values.items()),
                )
                if processed_key is not None:
                    self._db.execute(
                        "INSERT OR IGNORE INTO processed (key, at) VALUES (?, ?)",
                        (processed_key, time.time()),
                    )
                self._db.executemany(
                    "INSERT INTO uploads (detection_id, kind, path, bytes, created) VALUES (?, ?, ?, ?, ?)",
                    [(u.detection_id, u.kind, str(u.path), u.bytes, time.time()) for u in uploads],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"spool {self.path}: {exc}") from exc
            if dropped_total != self.dropped:
                log.warning(
                    "spool full (%d bytes max): dropped %d message(s) by %s, %d dropped in all",
                    self.max_bytes,
                    dropped_total - self.dropped,
                    self.policy,
                    dropped_total,
                )
            self.dropped = dropped_total
            self._depth += 0 if refused else len(messages)
            self._depth -= dropped_now
            self._bytes += (0 if refused else size) - dropped_bytes

    def _make_room(self, size: int) -> tuple[int, int, bool]:
        """Drop per policy until `size` more bytes fit: (rows dropped, bytes freed, refused)."""
        if self._bytes + size <= self.max_bytes:
            return 0, 0, False
        if self.policy == "drop_newest" or size > self.max_bytes:
            return 0, 0, True
        need = self._bytes + size - self.max_bytes
        freed, victims = 0, []
        for row_id, length in self._db.execute(
            "SELECT id, LENGTH(payload) FROM outbox ORDER BY priority, id"
        ):
            victims.append((row_id,))
            freed += int(length)
            if freed >= need:
                break
        self._db.executemany("DELETE FROM outbox WHERE id = ?", victims)
        return len(victims), freed, False

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            self._db.execute("ROLLBACK")

    def is_processed(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone()
        return row is not None

    def mark_processed(self, key: str) -> None:
        self.put([], processed_key=key)

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # --- what the publisher does ---------------------------------------------------------------
    def get_batch(self, after_id: int, limit: int) -> list[SpooledMessage]:
        """The oldest unacknowledged messages with id > after_id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [SpooledMessage(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """The broker has the messages: delete them for good. SpoolError if that failed (the
        rows stay: the caller retries, or they are sent again, a duplicate and never a loss)."""
        keys = [(i,) for i in ids]
        if not keys:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                freed = 0
                deleted = 0
                for (row_id,) in keys:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,)
                    ).fetchone()
                    if row is not None:  # may have been dropped while in flight
                        freed += int(row[0])
                        deleted += 1
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"spool {self.path}: could not delete acknowledged rows: {exc}") from exc
            self._depth -= deleted
            self._bytes -= freed

    # --- dead letters ---------------------------------------------------------------------------
    def dead_letter(self, ids: Iterable[int], reason: str) -> int:
        """Move outbox rows to the dead letters (refused for good); returns how many moved."""
        return self._move_to_dead_letters("id = ?", [(i,) for i in ids], reason)

    def dead_letter_topic(self, topic: str, reason: str, exclude: Collection[int] = ()) -> int:
        """Move every queued row for `topic` (but `exclude`, still in flight) to the dead letters."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM outbox WHERE topic = ?", (topic,)).fetchall()
        ids = [(int(r[0]),) for r in rows if int(r[0]) not in exclude]
        return self._move_to_dead_letters("id = ?", ids, reason)

    def _move_to_dead_letters(self, where: str, params: list[tuple[int]], reason: str) -> int:
        if not params:
            return 0
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                moved = moved_bytes = 0
                for key in params:
                    row = self._db.execute(
                        f"DELETE FROM outbox WHERE {where}"  # noqa: S608 - a fixed clause of ours
                        " RETURNING topic, payload, qos, priority, created",
                        key,
                    ).fetchone()
                    if row is None:
                        continue
                    self._db.execute(
                        "INSERT INTO dead_letters (topic, payload, qos, priority, created, reason, at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*row, reason, now),
                    )
                    moved += 1
                    moved_bytes += len(row[1])
                trimmed, trimmed_bytes = self._trim_dead_letters(moved_bytes)
                if trimmed:
                    self._db.execute(
                        "INSERT INTO state (key, value) VALUES ('dropped', ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(self.dropped + trimmed),),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(
                    f"spool {self.path}: could not move rows to the dead letters: {exc}"
                ) from exc
            self._depth -= moved
            self._bytes -= moved_bytes
            self._dead_count += moved - trimmed
            self._dead_bytes += moved_bytes - trimmed_bytes
            self.dropped += trimmed
        if trimmed:
            log.warning(
                "dead letters over %d bytes: dropped the %d oldest", self.dead_letter_max_bytes, trimmed
            )
        return moved

    def _trim_dead_letters(self, adding: int) -> tuple[int, int]:
        """Inside a transaction: drop the oldest dead letters beyond the limit."""
        excess = self._dead_bytes + adding - self.dead_letter_max_bytes
        if excess <= 0:
            return 0, 0
        freed, victims = 0, []
        for row_id, length in self._db.execute("SELECT id, LENGTH(payload) FROM dead_letters ORDER BY id"):
            victims.append((row_id,))
            freed += int(length)
            if freed >= excess:
                break
        self._db.executemany("DELETE FROM dead_letters WHERE id = ?", victims)
        return len(victims), freed

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, reason, at FROM dead_letters ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(int(r[0]), str(r[1]), bytes(r[2]), str(r[3]), float(r[4])) for r in rows]

    def requeue_dead_letters(self) -> int:
        """Put every dead letter back at the end of the queue (the broker's refusal was fixed)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "DELETE FROM dead_letters RETURNING topic, payload, qos, priority, created"
                ).fetchall()
                self._db.executemany(
                    "INSERT INTO outbox (topic, payload, qos, priority, created) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"spool {self.path}: could not requeue dead letters: {exc}") from exc
            size = sum(len(r[1]) for r in rows)
            self._depth += len(rows)
            self._bytes += size
            self._dead_count, self._dead_bytes = 0, 0
        return len(rows)

    @property
    def dead_letter_count(self) -> int:
        return self._dead_count

    # --- a trap whose device id or topic prefix changed ----------------------------------------
    @property
    def home(self) -> str | None:
        """The "<prefix>/<device>" the queued rows were written for (None: not recorded yet)."""
        return self.get_state(_HOME)

    def set_home(self, home: str) -> None:
        self.set_state({_HOME: home})

    def rows_outside(self, topics: Collection[str], batch: int = 500) -> Iterator[SpooledMessage]:
        """Queued rows whose topic is not one of `topics`, oldest first, in small batches."""
        marks = ",".join("?" for _ in topics) or "''"
        after = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT id, topic, payload, qos FROM outbox WHERE id > ? AND topic NOT IN ({marks})"  # noqa: S608
                    " ORDER BY id LIMIT ?",
                    (after, *topics, batch),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield SpooledMessage(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]))
            after = int(rows[-1][0])

    def rewrite(self, row_id: int, topic: str, payload: bytes) -> None:
        """Give a queued row a new topic and payload (same place in the queue)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT LENGTH(payload) FROM outbox WHERE id = ?", (row_id,)
                ).fetchone()
                self._db.execute(
                    "UPDATE outbox SET topic = ?, payload = ? WHERE id = ?", (topic, payload, row_id)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"spool {self.path}: could not rewrite row {row_id}: {exc}") from exc
            if row is not None:
                self._bytes += len(payload) - int(row[0])

    # --- housekeeping ---------------------------------------------------------------------------
    def prune_processed(self, older_than_s: float, still_needed: Callable[[str], bool]) -> int:
        """Forget "frame done" marks older than `older_than_s` unless `still_needed(key)` (a file
        still on the card must not be processed again); kept marks are refreshed so each is checked
        once per period. Returns how many were forgotten."""
        cutoff = time.time() - older_than_s
        forgotten = 0
        while True:
            with self._lock:
                keys = [
                    str(r[0])
                    for r in self._db.execute(
                        "SELECT key FROM processed WHERE at < ? ORDER BY at LIMIT 1000", (cutoff,)
                    )
                ]
            if not keys:
                return forgotten
            keep = [k for k in keys if still_needed(k)]
            drop = [k for k in keys if k not in set(keep)]
            now = time.time()
            with self._lock:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("DELETE FROM processed WHERE key = ?", [(k,) for k in drop])
                    self._db.executemany(
                        "UPDATE processed SET at = ? WHERE key = ?", [(now, k) for k in keep]
                    )
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise SpoolError(f"spool {self.path}: could not prune processed marks: {exc}") from exc
            forgotten += len(drop)

    def vacuum(self, min_free_pages: int = 256) -> int:
        """Give free pages back to the file system (incremental vacuum); returns pages freed."""
        with self._lock:
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            if free < min_free_pages:
                return 0
            try:
                # executescript steps the pragma to the end (execute() frees one page per call)
                self._db.executescript("PRAGMA incremental_vacuum;")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: incremental vacuum failed: {exc}") from exc
            return free - int(self._db.execute("PRAGMA freelist_count").fetchone()[0])

    # --- what the uploader does ----------------------------------------------------------------
    def next_upload(self) -> QueuedUpload | None:
        with self._lock:
            row = self._db.execute(
                # below-threshold candidates wait until every regular picture is sent
                "SELECT id, detection_id, kind, path, bytes FROM uploads ORDER BY kind = ?, id LIMIT 1",
                (LOW_PRIORITY_UPLOAD,),
            ).fetchone()
        if row is None:
            return None
        return QueuedUpload(str(row[1]), str(row[2]), Path(row[3]), int(row[4]), int(row[0]))

    def finish_upload(self, upload: QueuedUpload) -> None:
        """Sent (or refused for good): forget the row, then the file."""
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE id = ?", (upload.id,))
        upload.path.unlink(missing_ok=True)

    def trim_uploads(self, max_bytes: int) -> int:
        """Drop the oldest pictures beyond `max_bytes`; returns how many were dropped."""
        with self._lock:
            rows = self._db.execute(  # the newest regular pictures are kept first, candidates last
                "SELECT id, path, bytes FROM uploads ORDER BY kind = ?, id DESC", (LOW_PRIORITY_UPLOAD,)
            ).fetchall()
            total, victims = 0, []
            for row_id, path, size in rows:
                total += int(size)
                if total > max_bytes:
                    victims.append((int(row_id), Path(path)))
            self._db.executemany("DELETE FROM uploads WHERE id = ?", [(v[0],) for v in victims])
        for _, path in victims:
            path.unlink(missing_ok=True)
        return len(victims)

    def remove_orphan_uploads(self) -> int:
        """Delete picture files no queued upload points at (a crash between write and commit)."""
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            queued = {Path(row[0]).name for row in self._db.execute("SELECT path FROM uploads")}
        orphans = [p for p in self.uploads_dir.iterdir() if p.is_file() and p.name not in queued]
        for path in orphans:
            path.unlink(missing_ok=True)
        return len(orphans)

    def upload_backlog(self) -> tuple[int, int]:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM uploads").fetchone()
        return int(row[0]), int(row[1])

    def set_state(self, values: dict[str, str]) -> None:
        self.put([], state=values)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()
