"""Bulk writes for the high-volume tables (frames, boxes, sequences), straight to the driver.

Measured (bench/fleet.py, README): with SQLAlchemy's multi-row INSERT ... RETURNING, psycopg
re-parsed a fresh 10,000-placeholder statement for every batch (70 % of the time into
PostgreSQL), and on SQLite SQLAlchemy's per-value type processing took most of the rest. Here:

- PostgreSQL: binary COPY. Boxes are copied straight into their table (only boxes of new frames
  reach here); frames go through a per-connection temporary table, then `INSERT ... SELECT ...
  ON CONFLICT DO NOTHING RETURNING id` says which ids were new. Sequences (fewer): one constant
  statement over binary arrays, `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`.
- SQLite: the sqlite3 module's cached statement, executed per row (C, microseconds), with
  `INSERT ... ON CONFLICT DO NOTHING` and the row count telling which ids were new.

Values are converted exactly as the ORM stores them (UTC instants; on SQLite naive UTC text), so
rows written here read back through the models like any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

FRAME_COLUMNS = (
    "id", "device_id", "captured_at", "processed_at", "received_at", "sequence_id", "frame_index",
    "image_file", "image_sha256", "width", "height", "night", "model_name", "model_version",
    "inference_ms", "detection_count", "max_conf", "categories", "clock_suspect",
)  # fmt: skip
FRAME_PG_TYPES = (
    "text", "text", "timestamptz", "timestamptz", "timestamptz", "text", "int4", "text", "text", "int4",
    "int4", "bool", "text", "text", "float8", "int4", "float8", "text", "bool",
)  # fmt: skip
BOX_COLUMNS = ("frame_id", "category", "conf", "x", "y", "w", "h")
BOX_PG_TYPES = ("text", "text", "float8", "float8", "float8", "float8", "float8")
SEQUENCE_COLUMNS = (
    "id", "device_id", "first_frame_at", "last_frame_at", "frame_count", "categories",
    "mean_class_probabilities",
)  # fmt: skip
SEQUENCE_PG_TYPES = ("text", "text", "timestamptz", "timestamptz", "int4", "text", "text")
_JSON_COLUMNS = {"categories", "mean_class_probabilities"}
_DATETIME_INDEXES = {
    "detection_frames": (2, 3, 4),
    "sequences": (2, 3),
}


def sqlite_time(value: datetime) -> str:
    """An aware datetime as SQLAlchemy stores it on SQLite (UtcDateTime: naive UTC, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _driver(session: Session) -> tuple[str, Any]:
    connection = session.connection()
    return connection.dialect.name, connection.connection.dbapi_connection


def _pg_unnest(table: str, columns: Sequence[str], types: Sequence[str], conflict: str | None) -> str:
    arrays = ", ".join(f"%b::{kind}[]" for kind in types)
    names = ", ".join(columns)
    selected = ", ".join(f"{name}::json" if name in _JSON_COLUMNS and table == "sequences" else name
                         for name in columns)  # fmt: skip
    # names from the constants above, never from a message
    sql = f"INSERT INTO {table} ({names}) SELECT {selected} FROM unnest({arrays}) AS t({names})"  # noqa: S608
    if conflict:
        sql += f" ON CONFLICT ({conflict}) DO NOTHING RETURNING {conflict}"
    return sql


def _sqlite_insert(table: str, columns: Sequence[str], conflict: str | None) -> str:
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - constant names
    return sql + (f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else "")


def _pg_copy(
    cursor: Any, table: str, columns: Sequence[str], types: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def _pg_frames(dbapi: Any, rows: list[tuple[Any, ...]]) -> set[str]:
    names = ", ".join(FRAME_COLUMNS)
    with dbapi.cursor() as cursor:
        # lives as long as the connection, emptied at every commit; asked for in every transaction
        # (cheap) because a rolled-back transaction takes a table it created with it
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS frames_in (LIKE detection_frames INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        _pg_copy(cursor, "frames_in", FRAME_COLUMNS, FRAME_PG_TYPES, rows)
        cursor.execute(
            f"INSERT INTO detection_frames ({names}) SELECT {names} FROM frames_in"  # noqa: S608 - constants
            " ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        return {row[0] for row in cursor.fetchall()}


def _write(
    session: Session,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: str | None,
) -> set[str]:
    """Insert `rows` (tuples in `columns` order); with `conflict`, skip rows whose key exists and
    return the keys actually inserted."""
    if not rows:
        return set()
    dialect, dbapi = _driver(session)
    if dialect == "postgresql":
        if table == "detection_frames":
            return _pg_frames(dbapi, rows)
        with dbapi.cursor() as cursor:
            if conflict is None:
                _pg_copy(cursor, table, columns, types, rows)
                return set()
            arrays = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(_pg_unnest(table, columns, types, conflict), arrays)
            return {row[0] for row in cursor.fetchall()}
    times = _DATETIME_INDEXES.get(table, ())
    statement = _sqlite_insert(table, columns, conflict)
    cursor = dbapi.cursor()
    inserted: set[str] = set()
    try:
        for row in rows:
            values = list(row)
            for index in times:
                values[index] = sqlite_time(values[index])
            cursor.execute(statement, values)
            if conflict and cursor.rowcount == 1:
                inserted.add(row[0])
    finally:
        cursor.close()
    return inserted


def insert_frames(session: Session, rows: list[tuple[Any, ...]]) -> set[str]:
    """Frames in FRAME_COLUMNS order; the ids that were new (redeliveries are skipped)."""
    return _write(session, "detection_frames", FRAME_COLUMNS, FRAME_PG_TYPES, rows, "id")


def insert_boxes(session: Session, rows: list[tuple[Any, ...]]) -> None:
    _write(session, "detections", BOX_COLUMNS, BOX_PG_TYPES, rows, None)


def insert_sequences(session: Session, rows: list[tuple[Any, ...]]) -> set[str]:
    """Sequences in SEQUENCE_COLUMNS order, the two JSON columns as Python objects."""
    encoded = [(*row[:5], json.dumps(row[5]), json.dumps(row[6])) for row in rows]
    return _write(session, "sequences", SEQUENCE_COLUMNS, SEQUENCE_PG_TYPES, encoded, "id")
