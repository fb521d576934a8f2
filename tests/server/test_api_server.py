"""The API as systemd runs it (`trapline server api` in its own process, a real socket): uploads
are authenticated and size-checked before their body is read, CPU work stays off the event loop,
and the process tells systemd it is ready and alive."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import SAMPLES
from tests.server.conftest import UPLOAD, VIEWER, seed, settings_for
from trapline.cli.broker import free_port
from trapline.server.api.main import create_app
from trapline.server.migrate import upgrade

UPLOAD_LIMIT = 1024 * 1024  # the server's max_upload_bytes in these tests
GIANT = 600 * 1024 * 1024


@dataclass
class ApiProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    tmpdir: Path
    data_dir: Path
    notifications: list[str]
    log: Path


def _listen_for_notifications(path: Path, into: list[str]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))

    def read() -> None:
        while True:
            try:
                into.append(sock.recv(4096).decode())
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    return sock


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    root = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{root / 'trapline.sqlite'}"
    upgrade(url)
    app = create_app(settings_for(url, root))
    seed(app)
    app.state.engine.dispose()
    tmpdir = root / "tmp"
    tmpdir.mkdir()
    notifications: list[str] = []
    notify = _listen_for_notifications(root / "notify.sock", notifications)
    port = free_port()
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": url,
        "TRAPLINE_SERVER_DATA_DIR": str(root / "data"),
        "TRAPLINE_SERVER_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "TMPDIR": str(tmpdir),  # where Starlette would spool a received upload
        "NOTIFY_SOCKET": str(root / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
    }
    log = root / "api.log"
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "server", "api", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    deadline = time.monotonic() + 60
    while "READY=1" not in notifications:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield ApiProcess(f"http://127.0.0.1:{port}", port, process, tmpdir, root / "data", notifications, log)
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    notify.close()


def _spooled_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _push(port: int, head: str, total: int) -> tuple[bytes, int]:
    """Send `head`, then up to `total` body bytes as fast as the server takes them, until it
    answers or hangs up; (what it answered, body bytes the kernel accepted)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode())
    sock.setblocking(False)
    chunk = b"\0" * 65536
    sent, answer = 0, b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1.0)
            if readable:
                data = sock.recv(65536)
                answer += data
                if not data or b"\r\n\r\n" in answer:
                    break
            if writable:
                try:
                    sent += sock.send(chunk[: total - sent])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
    finally:
        sock.close()
    return answer, sent


def _multipart_head(length: int | None, token: str | None = None, expect: bool = False) -> str:
    lines = [
        "POST /api/v1/media HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: multipart/form-data; boundary=xyz",
    ]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if expect:
        lines.append("Expect: 100-continue")
    return "\r\n".join(lines) + "\r\n\r\n"


def test_an_unauthenticated_600_mb_upload_is_refused_without_being_received(api: ApiProcess) -> None:
    answer, sent = _push(api.port, _multipart_head(GIANT), GIANT)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    # what the kernel's socket buffers took before the answer; the server read almost none of it
    assert sent < 32 * 1024 * 1024, sent
    print(f"unauthenticated 600 MB upload: {sent} bytes taken by the sockets before the 401")
    assert _spooled_bytes(api.tmpdir) == 0
    assert _spooled_bytes(api.data_dir / "media") == 0 if (api.data_dir / "media").exists() else True
    # a client that asks first (Expect: 100-continue) is told 401 and sends nothing at all
    answer, _ = _push(api.port, _multipart_head(GIANT, expect=True), 0)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_an_authenticated_upload_over_the_limit_is_refused_before_or_while_reading(api: ApiProcess) -> None:
    # declared too large: refused on the headers
    answer, sent = _push(api.port, _multipart_head(GIANT, UPLOAD), GIANT)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 32 * 1024 * 1024
    # no Content-Length (chunked): cut off once past the limit
    chunk = b"\0" * 65536
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", api.port))
    sock.sendall(_multipart_head(None, UPLOAD).encode())
    sock.settimeout(10)
    sent, answer = 0, b""
    try:
        while sent < 20 * UPLOAD_LIMIT:
            sock.sendall(body)
            sent += len(chunk)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    if not answer:
        answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert sent < 8 * UPLOAD_LIMIT
    assert _spooled_bytes(api.tmpdir) == 0


def test_a_picture_within_the_limit_is_stored(api: ApiProcess) -> None:
    photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
    assert len(photo) < UPLOAD_LIMIT
    response = httpx.post(
        f"{api.url}/api/v1/media",
        data={"kind": "thumbnail", "detection_id": "trap-01:000000000"},
        files={"file": ("t.jpg", photo)},
        headers={"Authorization": f"Bearer {UPLOAD}"},  # plain http, but from this machine
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(photo)


def test_inference_refuses_large_inputs_and_never_blocks_other_requests(
    api: ApiProcess, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    too_big = httpx.post(
        f"{api.url}/api/v1/inference",
        files={"file": ("x.jpg", b"\xff" * (UPLOAD_LIMIT + 1))},
        headers=headers,
    )
    assert too_big.status_code == 413  # refused, not silently truncated
    # a photo whose decoding takes about a second here (56 megapixels, under 1 MB as a smooth JPEG)
    row = np.linspace(0, 255, 8000, dtype=np.uint8)
    ok, jpeg = cv2.imencode(
        ".jpg", np.broadcast_to(row[None, :, None], (7000, 8000, 3)).copy(), [cv2.IMWRITE_JPEG_QUALITY, 30]
    )
    assert ok and len(jpeg) < UPLOAD_LIMIT, len(jpeg)
    finished: list[str] = []

    def infer() -> None:
        response = httpx.post(
            f"{api.url}/api/v1/inference",
            files={"file": ("big.jpg", jpeg.tobytes())},
            headers=headers,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        finished.append("inference")

    worker = threading.Thread(target=infer)
    worker.start()
    time.sleep(0.2)  # the upload is in, decoding has begun
    assert httpx.get(f"{api.url}/api/v1/session", headers=headers).status_code == 200
    finished.append("whoami")
    worker.join(120)
    assert finished == ["whoami", "inference"]  # answered while the photo was being decoded


def test_the_api_tells_systemd_it_is_ready_and_alive(api: ApiProcess) -> None:
    deadline = time.monotonic() + 10
    while api.notifications.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.notifications[0] == "READY=1"
    assert api.notifications.count("WATCHDOG=1") >= 2
