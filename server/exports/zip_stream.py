"""A ZIP archive produced as a stream of chunks: the archive never exists whole, in memory or on
disk. Each entry is generated content (deflated) or a file copied in 1 MiB pieces and stored as
it is (pictures are JPEG already)."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


class ZipEntry(Protocol):
    @property
    def path(self) -> str: ...  # name in the archive

    @property
    def chunks(self) -> Iterable[bytes] | None: ...  # generated content

    @property
    def source(self) -> Path | None: ...  # or a file to copy


class _Sink(io.RawIOBase):
    """An unseekable file that hands out what was written since the last `take`."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, datetime.now(UTC).timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def file_chunks(path: Path) -> Iterator[bytes]:
    """A file's content in pieces, read only as they are asked for."""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def zip_chunks(entries: Iterable[ZipEntry]) -> Iterator[bytes]:
    """The ZIP of `entries`, in chunks of about 1 MiB or less (empty chunks left out)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for entry in entries:
            if entry.source is not None:
                try:
                    source = entry.source.open("rb")
                except FileNotFoundError:  # deleted (retention) since the export was planned
                    log.warning("%s disappeared; left out of the archive", entry.source)
                    continue
                stored = _info(entry.path, zipfile.ZIP_STORED)
                with source, archive.open(stored, "w", force_zip64=True) as out:
                    while chunk := source.read(CHUNK_BYTES):
                        out.write(chunk)
                        if data := sink.take():
                            yield data
            else:
                with archive.open(_info(entry.path, zipfile.ZIP_DEFLATED), "w", force_zip64=True) as out:
                    for chunk in entry.chunks or ():
                        out.write(chunk)
                        if data := sink.take():
                            yield data
            if data := sink.take():
                yield data
    if data := sink.take():  # the central directory
        yield data
