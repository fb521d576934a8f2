"""Durable store-and-forward spool: every outgoing result waits here until the broker's PUBACK.

SQLite in WAL mode. `put` writes the messages, the "this frame is done" mark and the agent's
counters in one transaction, so a crash either loses nothing or redoes the frame (never both
publishes it and forgets it). Rows are deleted only by `ack`. The spool is bounded: when full,
`drop_oldest` drops the oldest empty-frame messages first, then the oldest of the rest;
`drop_newest` refuses new messages. Both count what they dropped.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
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
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    detection_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created REAL NOT NULL
);
"""

# the picture kind sent last and dropped first (a sample of below-threshold boxes)
LOW_PRIORITY_UPLOAD: MediaKind = "candidate"
# priorities: what to drop first when the spool is full
PRIORITY_EMPTY_FRAME = 0
PRIORITY_NORMAL = 1


class SpoolError(RuntimeError):
    """The spool could not store a message (disk full, I/O error); nothing was half-written."""


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


class DetectionSpool:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        policy: DropPolicy = "drop_oldest",
        synchronous: Literal["full", "normal"] = "full",
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.policy = policy
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
        self._depth, self._bytes = int(row[0]), int(row[1])
        self.dropped = int(self.get_state("dropped") or 0)
        if self._depth:
            log.info("spool %s holds %d unsent messages (%d bytes)", path, self._depth, self._bytes)

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
        """The broker has the messages: delete them for good."""
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
                # the rows stay and will be sent again: a duplicate, never a loss
                log.error("spool %s: could not delete acknowledged rows: %s", self.path, exc)
                return
            self._depth -= deleted
            self._bytes -= freed

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
