"""The JSON API on SQLite and PostgreSQL, with data stored by the real ingest path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import SAMPLES
from tests.server.conftest import ADMIN, UPLOAD, VIEWER, accepted
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch


def _get(client: TestClient, path: str, token: str = VIEWER, **params: Any) -> Any:
    response = client.get(f"/api/v1{path}", params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def _get_raw(client: TestClient, path: str, token: str) -> Any:
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_tokens_and_roles(client: TestClient) -> None:
    assert client.get("/api/v1/devices").status_code == 401
    assert client.get("/api/v1/devices", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (
        client.get("/api/v1/dead-letters", headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 403
    )
    dead = _get(client, "/dead-letters", ADMIN)
    assert [d["reason"] for d in dead] == ["not JSON"]
    # the map of every endpoint is for logged-in users only
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs", follow_redirects=False).status_code == 303
    document = _get_raw(client, "/openapi.json", VIEWER)
    assert document["info"]["title"] == "Trapline"
    assert "multipart/form-data" in document["paths"]["/api/v1/media"]["post"]["requestBody"]["content"]


def test_devices_report_health_from_status(client: TestClient) -> None:
    devices = {d["id"]: d for d in _get(client, "/devices")}
    assert devices["trap-01"]["health"] == "online"  # arrived after "offline", whatever the clocks say
    assert devices["trap-02"]["health"] == "offline"
    assert _get(client, "/devices/trap-02")["state"] == "offline"
    assert (
        client.get("/api/v1/devices/nope", headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 404
    )


def test_detection_filters_and_cursor_pagination(client: TestClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = _get(client, "/detections", limit=7, **({"cursor": cursor} if cursor else {}))
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 35
    assert len(set(seen)) == 35  # every frame exactly once across pages
    people = _get(client, "/detections", category="person", limit=100)["items"]
    assert len(people) == 6
    assert all(any(d["category"] == "person" for d in f["detections"]) for f in people)
    start = datetime(2026, 11, 22, 3, tzinfo=UTC)
    window = _get(client, "/detections", device_id="trap-01", since=(start + timedelta(hours=10)).isoformat(),
                  until=(start + timedelta(hours=20)).isoformat(), limit=100)["items"]  # fmt: skip
    assert sorted(f["id"] for f in window) == [f"trap-01:{n * 3600:09d}" for n in range(10, 20)]
    assert _get(client, "/detections", min_conf=0.9)["items"] == []


def test_daily_counts(client: TestClient) -> None:
    counts = {
        (c["day"], c["device_id"], c["category"]): c["detections"] for c in _get(client, "/counts/daily")
    }
    # trap-01 frames at 03:00 + n hours, n = 0..29: 21 on the 22nd, 9 on the 23rd
    assert counts[("2026-11-22", "trap-01", "animal")] == 21
    assert counts[("2026-11-23", "trap-01", "animal")] == 9
    assert counts[("2026-11-22", "trap-01", "person")] == 5  # n = 0, 5, 10, 15, 20
    assert counts[("2026-11-22", "trap-02", "vehicle")] == 5


def test_media_upload_by_device_and_download(client: TestClient) -> None:
    photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
    upload = {"kind": "thumbnail", "detection_id": "trap-01:000000000"}
    media = "/api/v1/media"  # the client speaks https
    bad = client.post(media, data=upload, files={"file": ("x.jpg", photo)})
    assert bad.status_code == 401
    headers = {"Authorization": f"Bearer {UPLOAD}"}
    plain = client.post(
        "http://testserver/api/v1/media", data=upload, files={"file": ("x.jpg", photo)}, headers=headers
    )
    assert plain.status_code == 403  # plain http from another machine: refused (and logged)
    assert "https" in plain.json()["detail"]
    first = client.post(media, data=upload, files={"file": ("x.jpg", photo)}, headers=headers)
    again = client.post(media, data=upload, files={"file": ("x.jpg", photo)}, headers=headers)
    assert first.json()["stored"] is True
    assert again.json()["stored"] is False  # content-addressed: same bytes, one file
    other = client.post(media, data={**upload, "detection_id": "trap-02:000000001"},
                        files={"file": ("x.jpg", photo)}, headers=headers)  # fmt: skip
    assert other.status_code == 403
    text = client.post(media, data=upload, files={"file": ("x.txt", b"hello")}, headers=headers)
    assert text.status_code == 415
    no_file = client.post(media, data=upload, headers=headers)
    assert no_file.status_code in (400, 422)
    sha = first.json()["sha256"]
    got = client.get(f"/api/v1/media/{sha}", headers={"Authorization": f"Bearer {VIEWER}"})
    assert got.content == photo
    frame = _get(client, "/detections", device_id="trap-01", limit=100)["items"][-1]
    assert frame["media"] == {"thumbnail": sha}


def test_inference_endpoint_runs_the_current_model(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    photo = (SAMPLES / "cougar-39858-0.jpg").read_bytes()
    result = client.post("/api/v1/inference", files={"file": ("c.jpg", photo)}, headers=headers)
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["model"]["name"] == "trapline-nano"
    assert (body["width"], body["height"]) == (1920, 1080)
    assert [d["category"] for d in body["detections"]] == ["animal"]
    picture = client.post("/api/v1/inference/annotated", files={"file": ("c.jpg", photo)}, headers=headers)
    assert picture.headers["content-type"] == "image/jpeg"
    assert picture.content[:3] == b"\xff\xd8\xff"
    assert picture.content != photo
    bad = client.post("/api/v1/inference", files={"file": ("c.jpg", photo[:5000])}, headers=headers)
    assert bad.status_code == 415
    assert "truncated" in bad.json()["detail"]


def test_species_labels_filter_detections(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    # frames of trap-01 are 1 h apart, so sequence n // 3 holds frames 3k..3k+2 (numbers * 3600)
    seq = client.post(
        "/api/v1/labels", json={"species": "red fox", "sequence_id": "trap-01:seq:000003600"}, headers=headers
    )
    assert seq.status_code == 201, seq.text
    assert seq.json()["labelled_by"] == "vic"
    one = client.post(
        "/api/v1/labels", json={"species": "red fox", "frame_id": "trap-02:000000004"}, headers=headers
    )
    assert one.status_code == 201
    both = client.post(
        "/api/v1/labels", json={"species": "x", "frame_id": "a", "sequence_id": "b"}, headers=headers
    )
    assert both.status_code == 422
    missing = client.post("/api/v1/labels", json={"species": "x", "frame_id": "trap-09:1"}, headers=headers)
    assert missing.status_code == 404
    foxes = _get(client, "/detections", category="red fox", limit=100)["items"]
    expected = {
        f["id"]
        for f in _get(client, "/detections", limit=100)["items"]
        if f["sequence_id"] == "trap-01:seq:000003600"
    }
    assert {f["id"] for f in foxes} == expected | {"trap-02:000000004"}
    assert len(expected) >= 1


def test_sequences_page_through_without_gaps(client: TestClient) -> None:
    app_sessions = client.app.state.sessions  # type: ignore[attr-defined]
    summaries = []
    for n in range(7):
        body = {
            "schema": "trapline.sequences/1", "sequence_id": f"trap-01:seq:{n:09d}", "device_id": "trap-01",
            "first_frame_at": f"2026-11-22T0{n}:00:00+00:00", "last_frame_at": f"2026-11-22T0{n}:00:02+00:00",
            "frame_count": 3, "categories": {"animal": {"max_count": 1, "best_conf": 0.9}},
            "mean_class_probabilities": {"animal": 0.9},
        }  # fmt: skip
        summaries.append(accepted("trapline/trap-01/sequences", json.dumps(body).encode()))
    with transaction(app_sessions) as session:
        store_batch(session, summaries, [])
    seen, cursor = [], None
    while True:
        page = _get(client, "/sequences", limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"trap-01:seq:{n:09d}" for n in reversed(range(7))]  # newest first, each once
    assert (
        client.get(
            "/api/v1/sequences?cursor=garbage", headers={"Authorization": f"Bearer {VIEWER}"}
        ).status_code
        == 400
    )
