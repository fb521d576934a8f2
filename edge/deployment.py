"""The trap's deployment record: where and how it was set up, sent to the server until it has it.

`trapline provision` writes `deployment.json` (a trapline.deployment/1 report) and the reference
photo into the trap's state folder and sends both at once when it can; a trap provisioned at a
site without network sends them later, from the agent (`DeploymentReporter`), with backoff. A
marker file beside the record (`deployment.sent`, holding the record's sha256) says it arrived.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from pydantic import ValidationError

from trapline.enrolment import DEPLOYMENT_REPORT_PATH, DeploymentReport
from trapline.files import atomic_write

log = logging.getLogger(__name__)

SENT_SUFFIX = ".sent"


def _marker(record: Path) -> Path:
    return record.with_suffix(SENT_SUFFIX)


def is_sent(record: Path) -> bool:
    marker = _marker(record)
    try:
        return marker.read_text().strip() == hashlib.sha256(record.read_bytes()).hexdigest()
    except OSError:
        return False


def _body(report: bytes, photo: bytes | None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="deployment"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
        + report
        + b"\r\n"
    ]
    if photo is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="reference.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + photo
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def send_deployment(
    base_url: str, token: str, record: Path, photo: Path | None, timeout_s: float = 60
) -> int:
    """POST the record (and photo) with the trap's upload token; the HTTP status (0: no answer).

    On 200 the marker is written, so it is sent once."""
    data = record.read_bytes()
    try:
        DeploymentReport.model_validate_json(data)
    except ValidationError as exc:
        log.error("deployment record %s is not valid, not sending it: %s", record, exc)
        return 422
    body, content_type = _body(data, photo.read_bytes() if photo is not None and photo.is_file() else None)
    request = urllib.request.Request(  # noqa: S310 - the server the trap was enrolled with
        base_url.rstrip("/") + DEPLOYMENT_REPORT_PATH,
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            json.loads(response.read())
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        log.warning("server refused the deployment record (HTTP %d): %s", status, exc.read()[:300])
    except OSError as exc:
        log.info("deployment record not sent yet (%s)", exc)
        return 0
    if status == 200:
        atomic_write(_marker(record), hashlib.sha256(data).hexdigest().encode(), 0o640)
    return status


class DeploymentReporter:
    """The agent's background sender for a record provisioning could not deliver."""

    def __init__(self, base_url: str, token: str, record: Path, photo: Path | None) -> None:
        self.base_url, self.token, self.record, self.photo = base_url, token, record, photo
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deployment", daemon=True)

    def start(self) -> None:
        if self.record.is_file() and not is_sent(self.record):
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        delay = 30.0
        while not self._stop.is_set():
            status = send_deployment(self.base_url, self.token, self.record, self.photo)
            if status == 200:
                log.info("deployment record delivered")
                return
            if status in (401, 403, 413, 415, 422):  # will not change by retrying
                return
            self._stop.wait(delay)
            delay = min(delay * 2, 3600.0)
