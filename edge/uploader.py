"""Sends queued pictures to the server over HTTP, oldest first, until the server confirms.

Failures back off exponentially (capped); a daily byte budget protects slow or metered links
(pictures wait for the next UTC day, they are not dropped); only the queue's own size limit
drops the oldest pictures. Standard library HTTP only: the Pi installs nothing more.

A picture counts as delivered only when the server answers 200 with its own JSON receipt naming
the picture's sha256: a captive portal's or proxy's "200 OK" page is a failure, retried later.
Nothing the network or the server does may end the thread; the agent watches that it lives.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

from trapline.credentials import reveal
from trapline.edge.config import UploadConfig
from trapline.edge.spool import DetectionSpool, QueuedUpload

log = logging.getLogger(__name__)

_BUDGET_DAY, _BUDGET_BYTES = "upload_day", "upload_bytes_today"
# answers that will not change by retrying: drop the picture, log why
_PERMANENT = {400, 403, 413, 415, 422}
_TRIM_INTERVAL_S = 60.0
_MAX_RECEIPT_BYTES = 64 * 1024


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class PictureUploader:
    def __init__(self, config: UploadConfig, spool: DetectionSpool) -> None:
        self.config = config
        self.spool = spool
        self.token = config.token()
        self.sent = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="uploader", daemon=True)

    @property
    def enabled(self) -> bool:
        return self.config.mode != "none"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        if self.enabled:
            if not self.token:
                log.warning("upload mode %s but no upload token (TRAPLINE_UPLOAD_TOKEN)", self.config.mode)
            self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _budget_left(self, size: int) -> bool:
        today = datetime.now(UTC).date().isoformat()
        if self.spool.get_state(_BUDGET_DAY) != today:
            self.spool.set_state({_BUDGET_DAY: today, _BUDGET_BYTES: "0"})
        used = int(self.spool.get_state(_BUDGET_BYTES) or 0)
        return used + size <= self.config.daily_bytes

    def _send(self, upload: QueuedUpload) -> int:
        """The HTTP status; 200 only with the server's receipt for exactly these bytes."""
        data = upload.path.read_bytes()
        body, content_type = _multipart(
            {"kind": upload.kind, "detection_id": upload.detection_id}, upload.path.name, data
        )
        request = urllib.request.Request(  # noqa: S310 - the configured server URL
            f"{(self.config.url or '').rstrip('/')}/api/v1/media",
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "Authorization": f"Bearer {reveal(self.token) or ''}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status, body = int(response.status), response.read(_MAX_RECEIPT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        if status == 200 and not _is_receipt(body, hashlib.sha256(data).hexdigest()):
            self.last_error = "upload: HTTP 200 without the server's receipt (captive portal or proxy?)"
            return 0
        return status

    def _loop(self) -> None:
        delay = 1.0
        next_trim = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_trim:  # the queue limit: once a minute, not per picture
                    self.dropped += self.spool.trim_uploads(self.config.max_queue_bytes)
                    next_trim = time.monotonic() + _TRIM_INTERVAL_S
                delay = self._upload_next(delay)
            except Exception as exc:  # the spool, the file system, the network, a bug: wait, retry
                self.last_error = f"upload: {type(exc).__name__}: {exc}"
                log.exception("uploader trouble; retrying in %.0f s", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.backoff_max_s)

    def _upload_next(self, delay: float) -> float:
        """Try the oldest picture; returns the backoff delay to use next."""
        upload = self.spool.next_upload()
        if upload is None:
            self._wake.wait(5)
            self._wake.clear()
            return delay
        if not upload.path.exists():
            self.spool.finish_upload(upload)
            return delay
        if not self._budget_left(upload.bytes):
            self._stop.wait(60)  # over today's budget: wait for tomorrow, keep the pictures
            return delay
        try:
            status = self._send(upload)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status, self.last_error = 0, f"upload failed: {type(exc).__name__}: {exc}"
        if status == 200:
            used = int(self.spool.get_state(_BUDGET_BYTES) or 0)
            self.spool.set_state({_BUDGET_BYTES: str(used + upload.bytes)})
            self.spool.finish_upload(upload)
            self.sent += 1
            return 1.0
        if status in _PERMANENT:
            log.error("server refused picture %s for good (HTTP %d); dropping it", upload.path.name, status)
            self.spool.finish_upload(upload)
            self.dropped += 1
            return delay
        if status != 0:
            self.last_error = f"upload: HTTP {status}"
        log.warning("upload of %s failed (%s); retrying in %.0f s", upload.path.name, self.last_error, delay)
        self._stop.wait(delay)
        return min(delay * 2, self.config.backoff_max_s)


def _is_receipt(body: bytes, sha256: str) -> bool:
    """The server's answer to an upload: a JSON object naming the stored picture's sha256."""
    if len(body) > _MAX_RECEIPT_BYTES:
        return False
    try:
        receipt = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8 (an HTML login page), too deep
        return False
    return isinstance(receipt, dict) and receipt.get("sha256") == sha256
