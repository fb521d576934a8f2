"""The picture uploader against a real local HTTP server: retries, refusals, daily budget."""

from __future__ import annotations

import hashlib
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trapline.edge.config import UploadConfig
from trapline.edge.spool import DetectionSpool, PendingUpload, QueuedUpload
from trapline.edge.uploader import PictureUploader


class _Server(http.server.ThreadingHTTPServer):
    # per request: an HTTP status (200 answers with the real receipt), "portal" (a captive
    # portal's 200 HTML page), "hang-up" (closes without an answer), or raw bytes for a 200 body
    answers: list[int | str | bytes]
    received: list[bytes]


def _file_part(body: bytes) -> bytes:
    """The picture's bytes inside the multipart body the uploader sends."""
    start = body.index(b'name="file"')
    start = body.index(b"\r\n\r\n", start) + 4
    return body[start : body.rindex(b"\r\n--")]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = self.server.answers.pop(0) if self.server.answers else 200
        if answer == "hang-up":
            self.close_connection = True
            return
        if answer == "portal" or isinstance(answer, bytes):
            content = b"<html><body>Welcome to Park WiFi: log in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if answer == "portal" else "application/json")
            self.end_headers()
            self.wfile.write(content if answer == "portal" else answer)  # type: ignore[arg-type]
            return
        assert isinstance(answer, int)
        if answer == 200:
            self.server.received.append(body)
        self.send_response(answer)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        receipt = {"sha256": hashlib.sha256(_file_part(body)).hexdigest(), "stored": True}
        self.wfile.write(json.dumps(receipt).encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.answers, httpd.received = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _queue(spool: DetectionSpool, count: int, size: int = 1000) -> None:
    spool.uploads_dir.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        path = spool.uploads_dir / f"p{n}.jpg"
        path.write_bytes(b"\xff\xd8\xff" + bytes([n]) * (size - 3))
        spool.put([], uploads=[PendingUpload(f"trap-01:{n:09d}", "crop", path, size)])


def _wait(predicate: object, timeout_s: float = 10) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_retries_until_confirmed_and_drops_only_permanent_refusals(tmp_path: Path, server: _Server) -> None:
    spool = DetectionSpool(tmp_path / "spool.sqlite", 1 << 30)
    _queue(spool, 3)
    server.answers = [503, 415]  # p0: server busy, then refused for good on the retry
    url = f"http://127.0.0.1:{server.server_address[1]}"
    uploader = PictureUploader(UploadConfig(url=url, mode="crops", backoff_max_s=0.2), spool)
    uploader.start()
    try:
        assert _wait(lambda: spool.upload_backlog() == (0, 0))
    finally:
        uploader.stop()
    assert uploader.sent == 2
    assert uploader.dropped == 1
    assert len(server.received) == 2
    assert b'name="detection_id"\r\n\r\ntrap-01:000000001' in server.received[0]
    assert b'name="detection_id"\r\n\r\ntrap-01:000000002' in server.received[1]
    assert list(spool.uploads_dir.iterdir()) == []  # files go with their rows


def test_daily_budget_holds_pictures_back_without_losing_them(tmp_path: Path, server: _Server) -> None:
    spool = DetectionSpool(tmp_path / "spool.sqlite", 1 << 30)
    _queue(spool, 5, size=1000)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    uploader = PictureUploader(UploadConfig(url=url, mode="crops", daily_bytes=2500), spool)
    uploader.start()
    try:
        assert _wait(lambda: uploader.sent == 2)
        assert not _wait(lambda: uploader.sent > 2, 1.0)  # the third would exceed 2,500 bytes today
    finally:
        uploader.stop()
    assert spool.upload_backlog() == (3, 3000)  # kept for tomorrow


def test_a_captive_portal_or_a_broken_answer_never_counts_as_delivered(
    tmp_path: Path, server: _Server
) -> None:
    spool = DetectionSpool(tmp_path / "spool.sqlite", 1 << 30)
    _queue(spool, 2)
    # a login page with 200, a hang-up, JSON that is not a receipt, nested JSON: all failures
    server.answers = ["portal", "hang-up", b'{"ok": true}', b"[" * 100_000, 200, 200]
    url = f"http://127.0.0.1:{server.server_address[1]}"
    uploader = PictureUploader(UploadConfig(url=url, mode="crops", backoff_max_s=0.1), spool)
    uploader.start()
    try:
        assert _wait(lambda: spool.upload_backlog() == (0, 0))
        assert uploader.alive  # survived every surprise
    finally:
        uploader.stop()
    assert uploader.sent == 2 and uploader.dropped == 0
    assert len(server.received) == 2


def test_the_uploader_survives_a_broken_spool_and_the_agent_can_see_it_alive(
    tmp_path: Path, server: _Server
) -> None:
    spool = DetectionSpool(tmp_path / "spool.sqlite", 1 << 30)
    _queue(spool, 1)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    uploader = PictureUploader(UploadConfig(url=url, mode="crops", backoff_max_s=0.1), spool)
    real_next = spool.next_upload
    failures = iter([sqlite3.OperationalError("disk I/O error")] * 3)

    def flaky_next() -> QueuedUpload | None:
        for failure in failures:
            raise failure
        return real_next()

    spool.next_upload = flaky_next  # type: ignore[method-assign]
    uploader.start()
    try:
        assert _wait(lambda: uploader.sent == 1)
        assert uploader.alive
    finally:
        uploader.stop()
    assert not uploader.alive
