"""Bundle download over HTTP that resumes where a dropped link left off (Range requests).

The bytes go to `<file>.part`; a later call asks only for what is missing (`Range: bytes=N-`), and
starts over if the server answers with the whole file. The finished file must have the size and
sha256 the command named. A full disk removes the partial file and says so (the old model keeps
running); a dropped link keeps it for the next attempt.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trapline.files import file_sha256

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(RuntimeError):
    """The download did not complete (network, server, corrupt data); the attempt may be repeated."""


class DiskFullError(DownloadError):
    """No room left for the download; the partial file has been removed."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    received_bytes: int  # transferred by this call (a resumed download receives only the rest)
    resumed_from: int  # bytes already on disk when this call started


def _disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def download(
    url: str,
    part: Path,
    size: int,
    sha256: str,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch `url` into `part` (resuming what is there); returns once the file is complete and its
    sha256 matches. DownloadError (or DiskFullError) otherwise."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    resumed_from = have
    received = 0
    if have < size:
        request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - http(s) only
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                have = _start_offset(response, have, size)
                mode = "ab" if have else "wb"
                with part.open(mode) as out:
                    while block := response.read(CHUNK_BYTES):
                        if have + len(block) > size:
                            raise DownloadError(f"{url} sent more than the {size} bytes announced")
                        out.write(block)
                        have += len(block)
                        received += len(block)
                        if on_progress is not None:
                            on_progress(have)
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            if not (exc.code == 416 and have == size):  # "nothing left to send": we have it all
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except OSError as exc:
            if _disk_full(exc):
                part.unlink(missing_ok=True)
                raise DiskFullError(
                    f"disk full after {have} of {size} bytes; the download was removed"
                ) from exc
            raise DownloadError(f"{url}: {exc} (after {have} of {size} bytes; will resume)") from exc
        except http.client.HTTPException as exc:  # IncompleteRead, a broken response
            raise DownloadError(f"{url}: {type(exc).__name__} after {have} of {size} bytes") from exc
        have = part.stat().st_size
    if have < size:
        raise DownloadError(f"{url}: connection ended after {have} of {size} bytes (will resume)")
    actual = file_sha256(part)
    if actual != sha256:
        part.unlink()  # e.g. a partial file spoilt by a power cut: the next attempt starts clean
        raise DownloadError(f"{url}: sha256 {actual[:12]}… does not match the release's {sha256[:12]}…")
    log.info("downloaded %s: %d bytes received, resumed from %d", url, received, resumed_from)
    return DownloadResult(part, received, resumed_from)


def _start_offset(response: http.client.HTTPResponse, have: int, size: int) -> int:
    """Where the response's body starts in the file: `have` for a matching 206, 0 for a 200."""
    if response.status == 200:
        if have:
            log.info("server ignored the range request: downloading from the start")
        return 0
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != have:
            raise DownloadError(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        if match.group(3) != "*" and int(match.group(3)) != size:
            raise DownloadError(f"server's file has {match.group(3)} bytes, the release says {size}")
        return have
    raise DownloadError(f"unexpected HTTP status {response.status}")
