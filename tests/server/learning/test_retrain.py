"""Review -> retrain -> gated registration, end to end on a tiny dataset and YOLOv8n; a worse
candidate is refused. Real Ultralytics training, evaluation, INT8 export and signing."""

from __future__ import annotations

import json
import os
import shutil
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
    """Review -> retrain -> gate -> signed release candidate, with real Ultralytics training,
    evaluation, INT8 export and signing, and the gate at zero tolerance in both runs:

    1. A real fine-tune (one epoch at 160 px from COCO's YOLOv8n, the base data's six photos plus
       the reviewed frames: six positives, one hard negative, an "unsure" frame left out) is scored
       against the current model on the fixed test split and REFUSED: it is worse on animal AP50
       (better on F1 and image accuracy: one worse metric is enough). Nothing is exported.
    2. A candidate that is the current model unchanged is not worse on any metric (ties pass at
       zero tolerance) and is ACCEPTED: exported to INT8, signed with the operator's key and
       registered as a release candidate. Its numbers come from the evaluation cache: the current
       model is never scored twice on the same split.

    So both of the gate's answers come from real evaluations with no slack; the gate's arithmetic
    alone (tolerance, lower-is-better, unmeasured metrics) is in test_gate.py."""
    coco = needs_shared(SHARED_WEIGHTS / "yolov8n-coco.pt")
    key, public = tmp_path / "keys" / "operator.key", tmp_path / "keys" / "operator.pub"
    generate_keys(key, public)
    settings = fleet.settings
    settings.signing_key, settings.retrain_base_weights = key, coco
    # the server registers only what the traps will trust: the operator's key is in its keyring
    settings.release_keyring = tmp_path / "keyring"
    install_public_key(settings.release_keyring, public.read_bytes())
    settings.retrain_base_data = tiny_dataset(tmp_path / "base")
    settings.retrain_epochs, settings.retrain_imgsz, settings.gate_tolerance = 1, 160, 0.0
    settings.export_max_map50_drop = 100.0  # INT8 of a 160 px model on two val photos: not what is tested
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
        refused = session.get(RetrainRun, "retrain-1")
        assert refused is not None and refused.state == "refused", refused.report if refused else None
        dataset = refused.report["dataset"]
        assert dataset["negatives"] == 1 and dataset["positives"] == 6 and dataset["left_out_frames"] >= 1
        gate = refused.report["gate"]
        assert gate["tolerance"] == 0.0 and gate["reason"].startswith("worse on")
        assert {c["metric"] for c in gate["checks"]} >= {"animal AP50", "image-level animal/empty accuracy"}
        assert refused.model_id is None and list(session.scalars(select(ModelVersion))) == []
        job = session.get(Job, "retrain-1")
        assert job is not None and job.message and job.message.startswith("candidate refused")
    assert Path(refused.report["candidate_weights"]).name == "last.pt"  # the real fine-tune
    assert "REFUSED" in (Path(refused.path) / "report.md").read_text()
    assert not (Path(refused.path) / "bundle").exists()

    def unchanged(data: Path, weights: Path, out: Path, epochs: int, imgsz: int) -> Path:
        out.mkdir(parents=True)
        return Path(shutil.copy(weights, out / "unchanged.pt"))

    run_retrain_job(settings, fleet.sessions, add_job(fleet, "retrain-2"), fit=unchanged)
    with fleet.sessions() as session:
        run = session.get(RetrainRun, "retrain-2")
        assert run is not None and run.state == "accepted", run.report if run else None
        assert run.report["gate"]["tolerance"] == 0.0 and all(
            c["passed"] for c in run.report["gate"]["checks"]
        )
        model = session.get(ModelVersion, run.model_id)
        assert model is not None and model.metrics["release_candidate"] and model.version == "1"
        release = session.scalars(select(Release).where(Release.model_id == model.id)).one()
        assert release.bundle_url == f"/api/v1/releases/{release.id}/bundle"  # downloadable by traps
        assert release.version == "1" and release.archive_file is not None
    manifest = verify_bundle(Path(run.path) / "bundle", public)  # signed with the operator's key
    assert manifest.format == "onnx" and "test_split" in manifest.metrics
    assert "ACCEPTED" in (Path(run.path) / "report.md").read_text()
    # three models scored, two distinct: the current model's numbers were read from the cache
    assert len(list((settings.learning_dir / "retrain" / "evaluations").iterdir())) == 2
