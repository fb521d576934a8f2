"""Camtrap DP and MegaDetector exports of data stored through the real ingest path, validated with
frictionless against the OFFICIAL Camtrap DP 1.0.2 profile and table schemas."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SAMPLES, SHARED
from tests.server.conftest import ADMIN, UPLOAD, VIEWER, accepted
from trapline.server.db import transaction
from trapline.server.exports import camtrap_dp
from trapline.server.exports.camtrap_dp import Entry, stream_zip, validate_folder, validate_package
from trapline.server.ingest.store import store_batch
from trapline.server.models import Detection, Media
from trapline.training.ingest import read_megadetector

VIEW = {"Authorization": f"Bearer {VIEWER}"}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
OFFICIAL = SHARED / "camtrap-dp-1.0.2"


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


def _sequence_summary(client: TestClient) -> None:
    """trap-01's first burst (its first frame alone: the seed's frames are an hour apart) closes."""
    summary = {"schema": "trapline.sequences/1", "sequence_id": "trap-01:seq:000000000", "device_id": "trap-01",
               "first_frame_at": "2026-11-22T03:00:00+00:00", "last_frame_at": "2026-11-22T03:00:02+00:00",
               "frame_count": 1, "categories": {"animal": {"max_count": 2, "best_conf": 0.8},
                                                 "person": {"max_count": 1, "best_conf": 0.8}},
               "mean_class_probabilities": {"animal": 0.7}}  # fmt: skip
    message = accepted("trapline/trap-01/sequences", json.dumps(summary).encode())
    with transaction(client.app.state.sessions) as session:  # type: ignore[attr-defined]
        store_batch(session, [message], [])


def _tables(files: dict[str, bytes]) -> dict[str, list[dict[str, str]]]:
    return {
        name: list(csv.DictReader(io.StringIO(files[f"{name}.csv"].decode())))
        for name in ("deployments", "media", "observations")
    }


def _export(client: TestClient) -> dict[str, bytes]:
    response = client.get("/api/v1/exports/camtrap-dp", headers=VIEW)
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    files = {name: archive.read(name) for name in archive.namelist()}
    files["x-skipped"] = response.headers["x-trapline-skipped-frames"].encode()
    return files


def test_the_official_example_passes_and_a_broken_copy_fails(tmp_path: Path) -> None:
    """The validator itself: the official example package is valid, a wrong cell is caught."""
    if not OFFICIAL.is_dir():
        pytest.skip("../shared/camtrap-dp-1.0.2 is not beside this checkout")
    example = tmp_path / "example"
    shutil.copytree(OFFICIAL / "example", example, ignore=shutil.ignore_patterns("media"))
    assert validate_folder(example) == []
    observations = example / "observations.csv"
    observations.write_text(observations.read_text().replace(",animal,", ",squirrel,", 1))
    errors = validate_folder(example)
    assert errors and any("observations" in e and "squirrel" in e for e in errors), errors


def test_shipped_schemas_are_the_official_files() -> None:
    if not OFFICIAL.is_dir():
        pytest.skip("../shared/camtrap-dp-1.0.2 is not beside this checkout")
    for name in ("camtrap-dp-profile.json", *(f"{t}-table-schema.json" for t in camtrap_dp.TABLES)):
        assert (camtrap_dp.SCHEMA_DIR / name).read_bytes() == (OFFICIAL / name).read_bytes(), name


def test_camtrap_dp_package_is_valid_and_complete(client: TestClient) -> None:
    _deploy(client)
    _sequence_summary(client)
    photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
    client.post("/api/v1/media", data={"kind": "thumbnail", "detection_id": "trap-01:000000000"},
                files={"file": ("t.jpg", photo)}, headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
    assert client.post("/api/v1/labels", json={"species": "Vulpes vulpes", "frame_id": "trap-01:000003600"},
                       headers=VIEW).status_code == 201  # fmt: skip
    assert client.post("/api/v1/labels", json={"species": "Lynx pardinus", "sequence_id": "trap-01:seq:000000000"},
                       headers=ADMIN_H).status_code == 201  # fmt: skip
    files = _export(client)
    # trap-01's frames before 2026-11-23T00:00 lie in the deployment (21); the rest and trap-02's are out
    assert files.pop("x-skipped") == str(9 + 5).encode()
    assert validate_package(files) == []
    tables = _tables(files)
    media, observations, deployments = tables["media"], tables["observations"], tables["deployments"]
    assert len(media) == 21
    assert [(d["deploymentID"], d["latitude"], d["longitude"]) for d in deployments] == [
        ("trap-01-1", "37.0", "-6.4")
    ]
    first = next(m for m in media if m["mediaID"] == "trap-01:000000000")
    assert first["filePath"].startswith("media/") and first["filePath"] in files  # the picture travels
    machine = [o for o in observations if o["classificationMethod"] == "machine"]
    boxes = [o for o in machine if o["observationLevel"] == "media"]
    assert len(boxes) == 21 + 5  # one observation per box: an animal per frame, a person in 5
    assert {o["observationType"] for o in boxes} == {"animal", "human"}
    assert {o["classifiedBy"] for o in machine} == {"trapline-nano 1"}  # model and version per call
    assert {(o["bboxX"], o["bboxY"], o["bboxWidth"], o["bboxHeight"]) for o in boxes} == {
        ("0.1", "0.2", "0.3", "0.4")
    }
    assert {o["eventID"] for o in boxes if o["mediaID"] == "trap-01:000000000"} == {"trap-01:seq:000000000"}
    events = {o["observationType"]: o for o in machine if o["observationLevel"] == "event"}
    assert events["animal"]["count"] == "2" and events["animal"]["mediaID"] == ""
    assert (events["animal"]["eventStart"], events["animal"]["eventEnd"]) == (
        "2026-11-22T03:00:00Z",
        "2026-11-22T03:00:02Z",
    )
    human = {o["scientificName"]: o for o in observations if o["classificationMethod"] == "human"}
    assert (
        human["Vulpes vulpes"]["classifiedBy"] == "vic"
        and human["Vulpes vulpes"]["observationLevel"] == "media"
    )
    assert (
        human["Lynx pardinus"]["classifiedBy"] == "ada"
        and human["Lynx pardinus"]["observationLevel"] == "event"
    )
    descriptor = json.loads(files["datapackage.json"])
    assert descriptor["profile"] == f"{camtrap_dp.BASE_URL}/camtrap-dp-profile.json"
    assert descriptor["spatial"] == {"type": "Point", "coordinates": [-6.4, 37.0]}
    assert {t["scientificName"] for t in descriptor["taxonomic"]} == {"Vulpes vulpes", "Lynx pardinus"}


def test_validation_catches_a_broken_table(client: TestClient) -> None:
    _deploy(client)
    files = _export(client)
    files.pop("x-skipped")
    broken = files["observations.csv"].decode().replace(",animal,", ",squirrel,", 1).encode()
    errors = validate_package({**files, "observations.csv": broken})
    assert errors and "observations" in errors[0]
    wrong_link = files["media.csv"].decode().replace("trap-01-1", "trap-99-1", 1).encode()
    assert any(
        "foreign" in e.lower() or "reference" in e.lower()
        for e in validate_package({**files, "media.csv": wrong_link})
    )


def test_export_without_deployments_says_what_to_do(client: TestClient) -> None:
    response = client.get("/api/v1/exports/camtrap-dp", headers=VIEW)
    assert response.status_code == 409
    assert "POST /api/v1/deployments" in response.json()["detail"]


def test_zip_streams_into_a_pipe(client: TestClient, tmp_path: Path) -> None:
    """The builder yields files and rows one by one; the ZIP needs no seekable output."""
    read_end, write_end = os.pipe()
    entries = [
        Entry("a.csv", chunks=(b"x,y\n" for _ in range(3))),
        Entry("p.jpg", source=SAMPLES / "squirrel-frame105534.jpg"),
    ]
    with os.fdopen(write_end, "wb") as pipe_in, os.fdopen(read_end, "rb") as pipe_out:
        import threading

        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(pipe_out.read()))
        reader.start()
        stream_zip(entries, pipe_in)
        pipe_in.close()
        reader.join(10)
    archive = zipfile.ZipFile(io.BytesIO(bytes(received)))
    assert archive.read("a.csv") == b"x,y\n" * 3
    assert archive.read("p.jpg") == (SAMPLES / "squirrel-frame105534.jpg").read_bytes()


def test_megadetector_export_reads_back(client: TestClient, tmp_path: Path) -> None:
    data = client.get("/api/v1/exports/megadetector", headers=VIEW).json()
    assert data["info"]["format_version"] == "1.4"
    assert data["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert len(data["images"]) == 35
    path = tmp_path / "md.json"
    path.write_text(json.dumps(data))
    labels = read_megadetector(path, threshold=0.5, ignore_below=0.1)  # our own training reader
    vehicles = [f for f, entry in labels.items() if any(b.category == "vehicle" for b in entry.boxes)]
    assert len(vehicles) == 5
    assert all(f.startswith("trap-02/") for f in vehicles)


def _box_ids(client: TestClient, frame_id: str) -> dict[str, int]:
    with client.app.state.sessions() as session:  # type: ignore[attr-defined]
        rows = session.execute(select(Detection.category, Detection.id).where(Detection.frame_id == frame_id))
        return {category: det_id for category, det_id in rows}


def _label(client: TestClient, keys: list[str], label: str, headers: dict[str, str]) -> None:
    response = client.post("/api/v1/learning/labels", json={"keys": keys, "label": label}, headers=headers)
    assert response.status_code == 201, response.text


def test_reviewers_crop_labels_are_human_observations(client: TestClient) -> None:
    _deploy(client)
    first, second = _box_ids(client, "trap-01:000000000"), _box_ids(client, "trap-01:000003600")
    _label(client, [f"d{first['animal']}"], "Lynx lynx", VIEW)
    _label(client, [f"d{first['animal']}"], "Lynx pardinus", ADMIN_H)  # a correction: only it is exported
    _label(client, [f"d{first['person']}"], "not an animal", VIEW)
    _label(client, [f"d{second['animal']}"], "unsure", VIEW)
    photo = (SAMPLES / "squirrel-frame105534.jpg").read_bytes()
    upload = client.post("/api/v1/media", data={"kind": "candidate", "detection_id": "trap-01:000003600"},
                         files={"file": ("c.jpg", photo)}, headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
    assert upload.status_code == 200, upload.text
    with client.app.state.sessions() as session:  # type: ignore[attr-defined]
        candidate = session.scalars(select(Media.id).where(Media.kind == "candidate")).one()
    _label(client, [f"m{candidate}"], "Sciurus vulgaris", VIEW)

    files = _export(client)
    files.pop("x-skipped")
    assert validate_package(files) == []
    observations = _tables(files)["observations"]
    human = {o["observationID"]: o for o in observations if o["classificationMethod"] == "human"}
    assert set(human) == {"trap-01:000000000:0:review", "trap-01:000000000:1:review",
                          "trap-01:000003600:0:review", f"trap-01:000003600:candidate-{candidate}"}  # fmt: skip
    lynx = human["trap-01:000000000:0:review"]
    assert (lynx["observationType"], lynx["scientificName"], lynx["classifiedBy"], lynx["count"]) == (
        "animal", "lynx pardinus", "ada", "1")  # fmt: skip
    assert lynx["classificationTimestamp"].endswith("Z") and lynx["bboxX"] == "0.1"
    assert lynx["mediaID"] == "trap-01:000000000" and lynx["eventID"] == "trap-01:seq:000000000"
    stump = human["trap-01:000000000:1:review"]
    assert (stump["observationType"], stump["scientificName"], stump["classifiedBy"]) == ("blank", "", "vic")
    assert "not an animal" in stump["observationComments"] and stump["bboxWidth"] == "0.3"
    assert human["trap-01:000003600:0:review"]["observationType"] == "unknown"
    squirrel = human[f"trap-01:000003600:candidate-{candidate}"]
    assert (squirrel["scientificName"], squirrel["bboxX"], squirrel["observationLevel"]) == (
        "sciurus vulgaris", "", "media")  # fmt: skip
    # the machine's own observations stay beside the reviews
    assert (
        observations[[o["observationID"] for o in observations].index("trap-01:000000000:0")][
            "classificationMethod"
        ]
        == "machine"
    )
    taxa = {t["scientificName"] for t in json.loads(files["datapackage.json"])["taxonomic"]}
    assert taxa == {"lynx pardinus", "sciurus vulgaris"}
