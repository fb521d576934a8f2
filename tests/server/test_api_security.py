"""Dashboard sessions (expiring, revocable, never the token in a cookie), strict time parameters,
and exports that are streamed and limited in number."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.server.conftest import ADMIN, VIEWER
from trapline.server.db import transaction
from trapline.server.exports.camtrap_dp import Entry
from trapline.server.exports.zip_stream import CHUNK_BYTES, zip_chunks
from trapline.server.models import WebSession
from trapline.server.security import hash_token


def _sessions(client: TestClient) -> list[WebSession]:
    with client.app.state.sessions() as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(WebSession)))


def test_login_gives_an_expiring_revocable_session_never_the_token(client: TestClient) -> None:
    login = client.post("/api/v1/session", data={"token": VIEWER})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" in cookie  # served over https
    session_id = client.cookies["trapline_session"]
    assert VIEWER not in cookie and session_id != VIEWER
    stored = _sessions(client)
    assert [s.id_hash for s in stored] == [hash_token(session_id)]  # only the hash is kept
    assert stored[0].expires_at - stored[0].created_at == timedelta(hours=12)
    assert client.get("/api/v1/session").json() == {"name": "vic", "role": "viewer"}

    # logout revokes: the same cookie, replayed, no longer works
    assert client.delete("/api/v1/session").status_code == 200
    assert _sessions(client) == []
    client.cookies.set("trapline_session", session_id)
    assert client.get("/api/v1/session").status_code == 401

    # an expired session is refused, whatever the browser still holds
    client.post("/api/v1/session", data={"token": ADMIN})
    with transaction(client.app.state.sessions) as session:  # type: ignore[attr-defined]
        session.execute(update(WebSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get("/api/v1/session").status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303  # to the login page
    # and the token itself is not a cookie credential
    client.cookies.clear()
    client.cookies.set("trapline_session", ADMIN)
    assert client.get("/api/v1/session").status_code == 401


def test_cookie_is_not_secure_over_plain_http(client: TestClient) -> None:
    login = client.post("http://testserver/api/v1/session", data={"token": VIEWER})
    assert login.status_code == 200
    assert "Secure" not in login.headers["set-cookie"]


def _deploy(client: TestClient) -> None:
    body = {
        "device_id": "trap-01",
        "latitude": 37.0,
        "longitude": -122.0,
        "start": "2026-11-01T00:00:00+00:00",
    }
    response = client.post("/api/v1/deployments", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text


def test_times_without_a_timezone_are_refused_not_a_server_error(client: TestClient) -> None:
    _deploy(client)
    headers = {"Authorization": f"Bearer {VIEWER}"}
    naive = "2026-11-22T03:00:00"
    for path in ("/api/v1/detections", "/api/v1/counts/daily", "/api/v1/exports/megadetector",
                 "/api/v1/exports/camtrap-dp"):  # fmt: skip
        for name in ("since", "until"):
            response = client.get(path, params={name: naive}, headers=headers)
            assert response.status_code == 422, (path, name, response.text)
        assert client.get(path, params={"since": naive + "+00:00"}, headers=headers).status_code == 200, path
    job = client.post(
        "/api/v1/jobs/dataset", json={"since": naive}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert job.status_code == 422
    cursor = base64.urlsafe_b64encode(json.dumps([naive, "trap-01:000000001"]).encode()).decode()
    assert client.get("/api/v1/detections", params={"cursor": cursor}, headers=headers).status_code == 400
    assert client.get("/api/v1/detections", params={"cursor": "!!"}, headers=headers).status_code == 400


def test_exports_are_limited_in_number(client: TestClient) -> None:
    _deploy(client)
    headers = {"Authorization": f"Bearer {VIEWER}"}
    gate = client.app.state.export_gate  # type: ignore[attr-defined]
    assert gate.acquire(blocking=False)  # an export is being built
    try:
        busy = client.get("/api/v1/exports/camtrap-dp", headers=headers)
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "30"
        assert client.get("/api/v1/exports/megadetector", headers=headers).status_code == 429
    finally:
        gate.release()
    for _ in range(3):  # every finished export gives its slot back
        response = client.get("/api/v1/exports/camtrap-dp", headers=headers)
        assert response.status_code == 200
        assert "content-length" not in response.headers  # streamed, never built whole first
        assert zipfile.ZipFile(io.BytesIO(response.content)).testzip() is None
        assert client.get("/api/v1/exports/megadetector", headers=headers).status_code == 200


def test_zip_is_streamed_in_pieces_never_whole(tmp_path: Path) -> None:
    picture = tmp_path / "big.jpg"
    content = bytes(range(256)) * (20 * 1024 * 1024 // 256)  # 20 MiB
    picture.write_bytes(content)
    entries = [
        Entry("datapackage.json", chunks=[b"{}"]),
        Entry("media.csv", chunks=[b"a,b\n"] * 1000),
        Entry("media/big.jpg", source=picture),
        Entry("media/gone.jpg", source=tmp_path / "gone.jpg"),
    ]
    chunks = list(zip_chunks(entries))
    assert max(len(c) for c in chunks) <= CHUNK_BYTES + 4096  # never the whole archive at once
    assert len(chunks) >= 20
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    assert archive.read("media/big.jpg") == content
    assert archive.read("datapackage.json") == b"{}"
    assert archive.read("media.csv") == b"a,b\n" * 1000
    assert "media/gone.jpg" not in archive.namelist()  # deleted meanwhile: left out, archive intact
