"""Crop features on disk: one Parquet file per finished chunk of work, per feature space.

A feature space is an extractor key, plus `-grey` for features of greyscale crops: features of two
spaces never mix. Each chunk file is written whole (temp file + rename) under the chunk's own name,
so a worker killed mid-chunk leaves nothing, and a chunk done twice (a lease taken over from a worker
that was only slow) is one file. A crop that could not be cut is a row with `failure` set and no
feature: recorded as data, retried by the next run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trapline.files import atomic_write

META_COLUMNS = (
    "key", "detection_id", "media_id", "frame_id", "device_id", "captured_at", "night", "category",
    "conf", "source_kind", "source_width", "source_height", "low_resolution", "failure",
)  # fmt: skip


@dataclass
class FeatureRow:
    key: str
    detection_id: int | None
    media_id: int | None
    frame_id: str
    device_id: str
    captured_at: Any  # datetime
    night: bool
    category: str | None
    conf: float | None
    source_kind: str | None
    source_width: int | None
    source_height: int | None
    low_resolution: bool | None
    failure: str | None


@dataclass
class FeatureTable:
    """The features of one space, one row per crop (the newest result per key)."""

    meta: dict[str, list[Any]]
    features: np.ndarray  # (N, dim) float32, rows of successful crops only
    failures: dict[str, str]

    @property
    def keys(self) -> list[str]:
        return list(self.meta["key"])

    def __len__(self) -> int:
        return len(self.meta["key"])


class FeatureStore:
    def __init__(self, root: Path, space: str) -> None:
        self.space = space
        self.folder = root / space

    def chunk_path(self, name: str) -> Path:
        return self.folder / f"{name}.parquet"

    def has_chunk(self, name: str) -> bool:
        return self.chunk_path(name).exists()

    def write_chunk(
        self, name: str, rows: Sequence[FeatureRow], features: Sequence[np.ndarray | None]
    ) -> Path:
        """One chunk's rows (features None for failures), all or nothing."""
        dim = next((len(f) for f in features if f is not None), 0)
        columns: dict[str, Any] = {c: [getattr(r, c) for r in rows] for c in META_COLUMNS}
        table = pa.table(columns)
        values = pa.array(
            [None if f is None else np.asarray(f, np.float32) for f in features],
            type=pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32()),
        )
        table = table.append_column("feature", values)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.chunk_path(name)
        atomic_write(target, buffer.getvalue())
        return target

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns)

    def done_keys(self) -> set[str]:
        """Keys with a feature (failures are not done: the next run tries them again)."""
        done: set[str] = set()
        for path in self._chunks():
            table = pq.read_table(path, columns=["key", "failure"])
            for key, failure in zip(table["key"].to_pylist(), table["failure"].to_pylist(), strict=True):
                if failure is None:
                    done.add(key)
        return done

    def load(self) -> FeatureTable:
        """Every crop's newest result: a later success replaces an earlier failure, never the
        reverse (a success is final). Features are read as whole columns, not row by row."""
        newest: dict[str, tuple[int, int]] = {}  # key -> (chunk, row) of the result kept
        ok: dict[str, bool] = {}
        metas: list[dict[str, list[Any]]] = []
        blocks: list[np.ndarray | None] = []
        for number, path in enumerate(self._chunks()):
            table = pq.read_table(path)
            meta = {c: table[c].to_pylist() for c in META_COLUMNS}
            column = table["feature"].combine_chunks()
            valid = np.asarray(column.is_valid()) if column.null_count else np.ones(len(column), bool)
            size = column.type.list_size if pa.types.is_fixed_size_list(column.type) else 0
            block = None
            if size:
                # the child array keeps a slot for a null (failed) row too: row i is its i-th block
                values = np.asarray(column.values.to_numpy(zero_copy_only=False), np.float32)
                block = values.reshape(-1, size)[column.offset : column.offset + len(column)]
            blocks.append(block)
            metas.append(meta)
            for row, key in enumerate(meta["key"]):
                if ok.get(key):
                    continue
                newest[key] = (number, row)
                ok[key] = bool(valid[row]) and size > 0
        chosen = [(key, place) for key, place in newest.items() if ok[key]]
        failures = {
            key: str(metas[place[0]]["failure"][place[1]]) for key, place in newest.items() if not ok[key]
        }
        meta_out: dict[str, list[Any]] = {c: [metas[n][c][r] for _, (n, r) in chosen] for c in META_COLUMNS}
        features = (
            np.stack([blocks[n][r] for _, (n, r) in chosen])  # type: ignore[index]
            if chosen
            else np.zeros((0, 0), np.float32)
        )
        return FeatureTable(meta_out, features, failures)

    def iter_jsonl(self) -> Iterator[str]:
        """One JSON object per crop (failures too), as the Yasuní study exported its features."""
        table = self.load()
        for i in range(len(table)):
            record = {c: table.meta[c][i] for c in META_COLUMNS if c != "failure"}
            record["captured_at"] = record["captured_at"].isoformat() if record["captured_at"] else None
            record["feature"] = [round(float(v), 6) for v in table.features[i]]
            yield json.dumps(record)
        for key, failure in sorted(table.failures.items()):
            yield json.dumps({"key": key, "failure": failure})

    def export_jsonl(self, target: Path) -> int:
        lines = list(self.iter_jsonl())
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, ("\n".join(lines) + "\n").encode() if lines else b"")
        return len(lines)
