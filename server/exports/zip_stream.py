"""A ZIP archive written as a stream of chunks: the archive never exists whole, in memory or on
disk. Pictures are copied in 1 MiB pieces and stored as they are (JPEG does not deflate);
tables are deflated."""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


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


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, datetime.now(UTC).timetuple()[:6])
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


def stream_zip(files: Mapping[str, bytes], pictures: Mapping[str, Path]) -> Iterator[bytes]:
    """The ZIP of `files` (name -> content) and `pictures` (name -> file on disk), in chunks."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, content in files.items():
            archive.writestr(_entry(name, zipfile.ZIP_DEFLATED), content)
            yield sink.take()
        for name, source in pictures.items():
            try:
                src = source.open("rb")
            except FileNotFoundError:  # deleted (retention) since the package was planned
                log.warning("%s disappeared; left out of the archive", source)
                continue
            with src, archive.open(_entry(name, zipfile.ZIP_STORED), "w", force_zip64=True) as out:
                while chunk := src.read(CHUNK_BYTES):
                    out.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()  # the central directory
