"""The chart endpoints (/api/v1/stats/*) on SQLite and PostgreSQL, over the seeded fleet."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.server.conftest import ADMIN, VIEWER


def _get(client: TestClient, path: str) -> Any:
    response = client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {VIEWER}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_activity_diel_trap_days_and_fleet(client: TestClient) -> None:
    activity = _get(client, "/stats/activity")
    totals = {
        k: sum(r["detections"] for r in activity if r["key"] == k) for k in ("animal", "person", "vehicle")
    }
    assert totals == {"animal": 30, "person": 6, "vehicle": 5}
    assert _get(client, "/stats/activity?device_id=trap-02")[0]["key"] == "vehicle"
    assert _get(client, "/stats/activity?by=species") == []
    headers = {"Authorization": f"Bearer {ADMIN}"}
    assert client.post("/api/v1/labels", json={"species": "Lynx pardinus", "frame_id": "trap-01:000000000"},
                       headers=headers).status_code == 201  # fmt: skip
    assert _get(client, "/stats/activity?by=species") == [
        {"day": "2026-11-22", "key": "Lynx pardinus", "detections": 1, "frames": 1}
    ]
    diel = _get(client, "/stats/diel")
    assert sum(diel["day"]) == 35 and sum(diel["night"]) == 0 and diel["solar_time_traps"] == []
    assert diel["day"][3] == 5 + 2  # trap-02's five frames and trap-01's at 03 h UTC on both days
    # a deployment far east moves trap-01's hours to local solar time (+12 h at 175° E)
    body = {
        "device_id": "trap-01",
        "latitude": -41.0,
        "longitude": 175.0,
        "start": "2026-11-01T00:00:00+00:00",
    }
    assert client.post("/api/v1/deployments", json=body, headers=headers).status_code == 201
    shifted = _get(client, "/stats/diel?device_id=trap-01")
    assert shifted["solar_time_traps"] == ["trap-01"] and shifted["day"][15] == 2  # 03 h UTC -> 15 h
    days = _get(client, "/stats/trap-days")
    assert {(r["device_id"], r["day"]): r["frames"] for r in days} == {
        ("trap-01", "2026-11-22"): 21,
        ("trap-01", "2026-11-23"): 9,
        ("trap-02", "2026-11-22"): 5,
    }
    assert _get(client, "/stats/trap-days?since=2026-11-23T00:00:00Z") == [
        {"device_id": "trap-01", "day": "2026-11-23", "frames": 9, "with_detections": 9}
    ]
    fleet = _get(client, "/stats/fleet")
    assert [d["id"] for d in fleet["devices"]] == ["trap-02", "trap-01"]  # offline first
    assert fleet["devices"][1]["longitude"] == 175.0 and fleet["map"]["tile_url"] is None
    assert client.get("/api/v1/stats/fleet").status_code == 401


def test_night_filter_on_detections(client: TestClient) -> None:
    assert len(_get(client, "/detections?night=false&limit=100")["items"]) == 35
    assert _get(client, "/detections?night=true")["items"] == []
