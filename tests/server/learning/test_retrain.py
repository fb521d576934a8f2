"""Review -> retrain -> gated registration, end to end on a tiny dataset and YOLOv8n; a worse
candidate is refused. Real Ultralytics training, evaluation, INT8 export and signing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from sqlalchemy import select

from tests.conftest import CAMTRAP, SHARED_WEIGHTS, needs_shared
from tests.server.clustering.conftest import Fleet
from trapline.bundle import verify_bundle
from trapline.keyring import generate_keys, install_public_key
from trapline.server.db import transaction
from trapline.server.learning.labels import NOT_AN_ANIMAL, UNSURE, label_crops
from trapline.server.learning.retrain import run_retrain_job
from trapline.server.learning.toolchain import SigningKeyError, check_signing_key
from trapline.server.models import Detection, DetectionFrame, Job, ModelVersion, Release, RetrainRun


def tiny_dataset(root: Path) -> Path:
    """camtrap-dev photos with MegaDetector boxes (model output) at 256 px: 6 train, 2 val, 3 test."""
    md = json.loads((needs_shared(CAMTRAP) / "megadetector.json").read_text())
    chosen = [
        i
        for i in md["images"]
        if any(d["conf"] >= 0.8 and d["category"] == "1" for d in i.get("detections") or [])
    ]
    splits = {"train": chosen[0:12:2], "val": chosen[1:5:2], "test": chosen[13:19:2]}
    for split, images in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in images:
            picture = cv2.imread(str(CAMTRAP / "images" / image["file"]))
            assert picture is not None
            scale = 256 / max(picture.shape[:2])
            stem = image["file"].replace("/", "_").rsplit(".", 1)[0]
            cv2.imwrite(
                str(root / "images" / split / f"{stem}.jpg"), cv2.resize(picture, None, fx=scale, fy=scale)
            )
            lines = [f"0 {x + w / 2:.5f} {y + h / 2:.5f} {w:.5f} {h:.5f}"
                     for d in image["detections"] if d["conf"] >= 0.5 for x, y, w, h in [d["bbox"]]]  # fmt: skip
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(json.dumps({"path": str(root), "train": "images/train", "val": "images/val", "test": "images/test",
                                "names": {0: "animal", 1: "person", 2: "vehicle"}}))  # fmt: skip
    return data


def add_job(fleet: Fleet, job_id: str) -> str:
    now = datetime.now(UTC)
    with transaction(fleet.sessions) as session:
        session.add(Job(id=job_id, kind="retrain", params={}, state="queued", progress=0.0, created_at=now,
                        updated_at=now))  # fmt: skip
    return job_id


def test_the_signing_key_must_be_private(tmp_path: Path) -> None:
    key, public = tmp_path / "k.key", tmp_path / "k.pub"
    generate_keys(key, public)
    assert check_signing_key(key) == key
    os.chmod(key, 0o644)
    with pytest.raises(SigningKeyError, match="0644"):
        check_signing_key(key)
    with pytest.raises(SigningKeyError, match="trapline keys generate"):
        check_signing_key(None)


@pytest.mark.slow
def test_review_retrain_and_gated_registration(fleet: Fleet, tmp_path: Path) -> None:
    coco = needs_shared(SHARED_WEIGHTS / "yolov8n-coco.pt")
    key, public = tmp_path / "keys" / "operator.key", tmp_path / "keys" / "operator.pub"
    generate_keys(key, public)
    settings = fleet.settings
    settings.signing_key, settings.retrain_base_weights = key, coco
    # the server registers only what the traps will trust: the operator's key is in its keyring
    settings.release_keyring = tmp_path / "keyring"
    install_public_key(settings.release_keyring, public.read_bytes())
    settings.retrain_base_data = tiny_dataset(tmp_path / "base")
    settings.retrain_epochs, settings.retrain_imgsz, settings.gate_tolerance = 1, 160, 1.0
    settings.export_max_map50_drop = 100.0  # one epoch on 6 photos: INT8 of such a model is fragile
    with transaction(fleet.sessions) as session:
        boxes = list(
            session.scalars(
                select(Detection).join(DetectionFrame).where(DetectionFrame.device_id == "trap-jaguar")
            )
        )
        label_crops(session, [f"d{b.id}" for b in boxes[:6]], "jaguar", "ada")
        label_crops(session, [f"d{boxes[6].id}"], NOT_AN_ANIMAL, "ada")
        label_crops(session, [f"d{boxes[7].id}"], UNSURE, "ada")

    run_retrain_job(settings, fleet.sessions, add_job(fleet, "retrain-1"))
    with fleet.sessions() as session:
        run = session.get(RetrainRun, "retrain-1")
        assert run is not None and run.state == "accepted", run.report if run else None
        dataset = run.report["dataset"]
        assert dataset["negatives"] == 1 and dataset["positives"] == 6 and dataset["left_out_frames"] >= 1
        model = session.get(ModelVersion, run.model_id)
        assert model is not None and model.metrics["release_candidate"] and model.version == "1"
        release = session.scalars(select(Release).where(Release.model_id == model.id)).one()
        assert release.bundle_url == f"/api/v1/releases/{release.id}/bundle"  # downloadable by traps
        assert release.version == "1" and release.archive_file is not None
    bundle = Path(run.path) / "bundle"
    manifest = verify_bundle(bundle, public)  # signed with the operator's key
    assert manifest.format == "onnx" and "test_split" in manifest.metrics
    gate = json.loads((Path(run.path) / "report.json").read_text())["gate"]
    assert {c["metric"] for c in gate["checks"]} >= {"animal AP50", "image-level animal/empty accuracy"}
    assert "ACCEPTED" in (Path(run.path) / "report.md").read_text()

    # a deliberately worse candidate: scored against the current model with no tolerance
    settings.gate_tolerance = 0.0
    worse = Path(run.report["candidate_weights"])  # one epoch at 160 px, a new head: far below COCO's

    def stale_fit(data: Path, weights: Path, out: Path, epochs: int, imgsz: int) -> Path:
        return worse

    run_retrain_job(settings, fleet.sessions, add_job(fleet, "retrain-2"), fit=stale_fit)
    with fleet.sessions() as session:
        refused = session.get(RetrainRun, "retrain-2")
        assert refused is not None and refused.state == "refused" and refused.model_id is None
        assert "worse on" in refused.report["gate"]["reason"]
        assert len(list(session.scalars(select(ModelVersion)))) == 1
        job = session.get(Job, "retrain-2")
        assert job is not None and job.message and job.message.startswith("candidate refused")
    assert not (Path(refused.path) / "bundle").exists()
