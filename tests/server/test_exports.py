"""Camtrap DP and MegaDetector exports of data stored through the real ingest path."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import SAMPLES
from tests.server.conftest import ADMIN, UPLOAD, VIEWER
from trapline.server.exports.camtrap_dp import validate_package
from trapline.training.ingest import read_megadetector

VIEW = {"Authorization": f"Bearer {VIEWER}"}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


def _deploy(client: TestClient) -> None:
    body = {"device_id": "trap-01", "location_name": "Donana-North", "latitude": 37.0, "longitude": -6.4,
            "start": "2026-11-01T00:00:00+00:00", "end": "2026-11-23T00:00:00+00:00"}  # fmt: skip
    assert client.post("/api/v1/deployments", json=body, headers=VIEW).status_code == 403
    assert (
        client.post(
            "/api/v1/deployments", json={**body, "end": "2026-10-01T00:00:00+00:00"}, headers=ADMIN_H
        ).status_code
        == 422
    )
    assert client.post("/api/v1/deployments", json=body, headers=ADMIN_H).status_code == 201


def test_camtrap_dp_package_is_valid_and_complete(client: TestClient) -> None:
    _deploy(client)
    photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
    client.post("/api/v1/media", data={"kind": "thumbnail", "detection_id": "trap-01:000000000"},
                files={"file": ("t.jpg", photo)}, headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
    response = client.get("/api/v1/exports/camtrap-dp", headers=VIEW)
    assert response.status_code == 200, response.text
    # trap-01's frames before 2026-11-23T00:00 lie in the deployment (21); the rest and trap-02's are out
    assert response.headers["x-trapline-skipped-frames"] == str(9 + 5)
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    files = {name: archive.read(name) for name in archive.namelist()}
    assert validate_package(files) == []
    media = list(csv.DictReader(io.StringIO(files["media.csv"].decode())))
    observations = list(csv.DictReader(io.StringIO(files["observations.csv"].decode())))
    deployments = list(csv.DictReader(io.StringIO(files["deployments.csv"].decode())))
    assert len(media) == 21
    assert len(deployments) == 1
    assert deployments[0]["latitude"] == "37.0"
    assert {o["observationType"] for o in observations} == {"animal", "human"}
    assert len(observations) == 21 + 5  # one animal per frame, plus a person in 5 of them
    first = next(m for m in media if m["mediaID"] == "trap-01:000000000")
    assert first["filePath"].startswith("media/")
    assert first["filePath"] in files  # the uploaded picture travels with the package
    descriptor = json.loads(files["datapackage.json"])
    assert descriptor["profile"].endswith("camtrap-dp-profile.json")


def test_validation_catches_a_broken_table(client: TestClient) -> None:
    _deploy(client)
    response = client.get("/api/v1/exports/camtrap-dp", headers=VIEW)
    files = {
        n: zipfile.ZipFile(io.BytesIO(response.content)).read(n)
        for n in ("datapackage.json", "deployments.csv", "media.csv", "observations.csv")
    }
    broken = files["observations.csv"].decode().replace(",animal,", ",squirrel,", 1).encode()
    errors = validate_package({**files, "observations.csv": broken})
    assert errors
    assert "observations" in errors[0]


def test_megadetector_export_reads_back(client: TestClient, tmp_path: Path) -> None:
    data = client.get("/api/v1/exports/megadetector", headers=VIEW).json()
    assert data["info"]["format_version"] == "1.4"
    assert len(data["images"]) == 35
    path = tmp_path / "md.json"
    path.write_text(json.dumps(data))
    labels = read_megadetector(path, threshold=0.5, ignore_below=0.1)  # our own training reader
    vehicles = [f for f, entry in labels.items() if any(b.category == "vehicle" for b in entry.boxes)]
    assert len(vehicles) == 5
    assert all(f.startswith("trap-02/") for f in vehicles)
