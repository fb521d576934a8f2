"""Retraining from reviews, with a not-worse gate.

1. Dataset: the existing training data (`retrain_base_data`, a `train prepare` data.yaml) plus every
   frame with a reviewed box, added to the train split only. In those frames a box labelled with a
   species is an animal, a box labelled "not an animal" is left out (a hard negative: the model
   learns that place is background), an unlabelled box at or above the clustering threshold stays
   as the model predicted it, and a frame with an "unsure" box or a weaker unlabelled box is left
   out (it cannot be taught either way).
2. Fine-tune from the current model's checkpoint; evaluate the current and the new model on the
   base data's test split, which is fixed and never trained on.
3. The gate (`gate.judge`) compares them; only a candidate that is not worse is exported to the
   INT8 bundle traps load, signed with the operator's key, and registered as a release candidate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from trapline.files import atomic_write, file_sha256
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.learning import toolchain
from trapline.server.learning.gate import judge
from trapline.server.learning.labels import NOT_AN_ANIMAL, UNSURE, current_labels
from trapline.server.models import CropLabel, Detection, Job, ModelVersion, RetrainRun
from trapline.server.queries import boxes_by_frame, media_by_frame, picture

log = logging.getLogger(__name__)

Fit = Callable[[Path, Path, Path, int, int], Path]


@dataclass
class ReviewedSet:
    frames: int
    positives: int
    negatives: int
    kept_predictions: int
    left_out_frames: int
    labels_used: int


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(source.resolve(), target)


def build_dataset(settings: ServerSettings, session: Session, out: Path) -> tuple[Path, ReviewedSet]:
    """The merged dataset in `out` (data.yaml), and what the reviews added."""
    base_yaml = settings.retrain_base_data
    if base_yaml is None or not base_yaml.is_file():
        raise FileNotFoundError(
            "retraining needs the existing training data: set TRAPLINE_SERVER_RETRAIN_BASE_DATA to the"
            " data.yaml of `trapline train prepare`"
        )
    base = yaml.safe_load(base_yaml.read_text())
    root = Path(base.get("path") or base_yaml.parent)
    if not root.is_absolute():
        root = (base_yaml.parent / root).resolve()
    names = base["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    for split in ("train", "val", "test"):
        for image in sorted((root / base[split]).iterdir()):
            _link(image, out / "images" / split / image.name)
            label = root / "labels" / split / image.with_suffix(".txt").name
            if label.exists():
                _link(label, out / "labels" / split / label.name)
    labels = {lab.detection_id: lab for lab in current_labels(session).values() if lab.detection_id}
    frame_ids = sorted(
        {d.frame_id for d in session.scalars(select(Detection).where(Detection.id.in_(list(labels))))}
    )
    boxes = boxes_by_frame(session, frame_ids)
    pictures = media_by_frame(session, frame_ids)
    added = ReviewedSet(0, 0, 0, 0, 0, len(labels))
    animal = classes.index("animal")
    for frame_id in frame_ids:
        media = picture(pictures[frame_id])
        lines, teachable = [], media is not None
        for det in boxes[frame_id]:
            label = labels.get(det.id)
            if label is not None and label.label == NOT_AN_ANIMAL:
                added.negatives += 1
                continue
            if label is not None and label.label == UNSURE:
                teachable = False
                break
            if label is None and det.conf < settings.clustering_min_conf:
                teachable = False  # a weaker box nobody reviewed: neither animal nor background
                break
            if label is None:
                added.kept_predictions += 1
                cls = classes.index(det.category) if det.category in classes else None
            else:
                added.positives += 1
                cls = animal
            if cls is not None:
                lines.append(f"{cls} {det.x + det.w / 2:.6f} {det.y + det.h / 2:.6f} {det.w:.6f} {det.h:.6f}")
        if not teachable or media is None:
            added.left_out_frames += 1
            continue
        stem = "reviewed_" + frame_id.replace(":", "_")
        _link(settings.media_dir / media.sha256[:2] / media.sha256, out / "images" / "train" / f"{stem}.jpg")
        atomic_write(
            out / "labels" / "train" / f"{stem}.txt", ("\n".join(lines) + "\n" if lines else "").encode()
        )
        added.frames += 1
    (out / "labels" / "train").mkdir(parents=True, exist_ok=True)
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "test": "images/test",
            "names": dict(enumerate(classes))}  # fmt: skip
    data_yaml = out / "data.yaml"
    atomic_write(data_yaml, yaml.safe_dump(data, sort_keys=False).encode())
    return data_yaml, added


# bump when the evaluation's numbers change meaning: cached reports of the old kind are not read
EVALUATION_CACHE_VERSION = 1


def split_digest(data_yaml: Path, split: str = "test") -> str:
    """What a split holds (each picture's name and bytes, its labels), as one hash."""
    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data.get("path") or data_yaml.parent)
    digest = hashlib.sha256()
    for image in sorted((root / data[split]).iterdir()):
        label = root / "labels" / split / image.with_suffix(".txt").name
        digest.update(f"{image.name}\0{file_sha256(image)}\0".encode())
        digest.update(label.read_bytes() if label.exists() else b"(no labels)")
    return digest.hexdigest()


def evaluate_on_test_split(
    settings: ServerSettings, weights: Path, data_yaml: Path, test_digest: str
) -> dict[str, Any]:
    """The model's evaluation report on the fixed test split, computed once per (weights, split,
    input size): every retraining scores the current model on the same split again."""
    key = f"{EVALUATION_CACHE_VERSION}:{file_sha256(weights)}:{test_digest}:{settings.retrain_imgsz}"
    cached = (
        settings.learning_dir / "retrain" / "evaluations" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    )
    if cached.exists():
        report: dict[str, Any] = json.loads(cached.read_text())
        return report
    report = toolchain.evaluate(weights, data_yaml, settings.retrain_imgsz)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, json.dumps(report).encode())
    return report


def _next_version(session: Session, name: str) -> str:
    versions = session.scalars(select(ModelVersion.version).where(ModelVersion.name == name))
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def retraining_due(settings: ServerSettings, sessions: sessionmaker[Session]) -> tuple[bool, str]:
    """The weekly rule: retrain when enough labels arrived since the last retraining that ran to
    its verdict (a failed one is tried again), and none is queued or running now."""
    with sessions() as session:
        waiting = session.scalar(
            select(func.count(Job.id)).where(Job.kind == "retrain", Job.state.in_(("queued", "running")))
        )
        if waiting:
            return False, "a retraining is already queued or running"
        last = session.scalar(select(func.max(RetrainRun.created_at)).where(RetrainRun.state != "failed"))
        query = select(func.count(CropLabel.id))
        if last is not None:
            query = query.where(CropLabel.labelled_at > last)
        new = int(session.scalar(query) or 0)
    due = new >= settings.retrain_min_new_labels
    return due, f"{new} new label(s) since the last retraining (needs {settings.retrain_min_new_labels})"


def run_retrain(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    run_id: str,
    name: str = "trapline-nano",
    fit: Fit | None = None,
) -> dict[str, Any]:
    """Build, fine-tune, evaluate both, gate, and (if accepted) export, sign and register."""
    key = toolchain.check_signing_key(settings.signing_key)  # fail before an hour of training
    base_weights = settings.retrain_base_weights
    if base_weights is None or not base_weights.is_file():
        raise FileNotFoundError(
            "set TRAPLINE_SERVER_RETRAIN_BASE_WEIGHTS to the current model's .pt checkpoint"
        )
    out = settings.learning_dir / "retrain" / run_id
    with sessions() as session:
        data_yaml, added = build_dataset(settings, session, out / "dataset")
    log.info("retraining %s: %s", run_id, added)
    fit = fit or toolchain.fit
    weights = fit(data_yaml, base_weights, out / "fit", settings.retrain_epochs, settings.retrain_imgsz)
    test_split = split_digest(data_yaml)
    current = evaluate_on_test_split(settings, base_weights, data_yaml, test_split)
    candidate = evaluate_on_test_split(settings, weights, data_yaml, test_split)
    evaluation = toolchain.write_evaluation(current, candidate, out / "evaluation")
    verdict = judge(current, candidate, settings.gate_tolerance)
    report: dict[str, Any] = {
        "dataset": added.__dict__, "base_weights": str(base_weights), "candidate_weights": str(weights),
        "test_images": candidate.get("images"), "gate": verdict.as_dict(),
        "current": {k: current.get(k) for k in ("map50", "image_accuracy", "per_class")},
        "candidate": {k: candidate.get(k) for k in ("map50", "image_accuracy", "per_class")},
    }  # fmt: skip
    model_id = version = None
    if verdict.accepted:
        model_file, export_report = toolchain.export_int8(
            weights, data_yaml, out / "export", settings.retrain_imgsz, settings.export_max_map50_drop
        )
        with sessions() as session:
            version = _next_version(session, name)
        provenance = {"retraining": {"run": run_id, "base_weights": str(base_weights), **added.__dict__}}
        manifest = toolchain.sign_bundle(
            model_file,
            out / "bundle",
            name,
            version,
            key,
            evaluation.with_name("report.json"),
            export_report,
            provenance,
        )
        with transaction(sessions) as session:
            model_id = toolchain.register_candidate(
                session, settings, manifest, out / "bundle", verdict.as_dict()
            )
        report["bundle"] = str(out / "bundle")
    report["registered_model_id"] = model_id
    outcome = f"ACCEPTED as release candidate v{version}" if verdict.accepted else "REFUSED"
    lines = [
        f"# Retraining {run_id}: {outcome}",
        "",
        f"Gate (tolerance {verdict.tolerance}): {verdict.reason}.",
        "",
        "| metric | current | candidate | passed |",
        "|---|---|---|---|",
        *[
            f"| {c.metric} | {c.current} | {c.candidate} | {'yes' if c.passed else 'NO'} |"
            for c in verdict.checks
        ],
        "",
        f"Dataset: {added.frames} reviewed frames added to train ({added.positives} reviewed animals,"
        f" {added.negatives} hard negatives, {added.kept_predictions} unreviewed predictions kept,"
        f" {added.left_out_frames} frames left out); test split: {candidate.get('images')} images,"
        " never trained on.",
        "",
        "Full evaluation: evaluation/report.md",
    ]
    atomic_write(out / "report.md", ("\n".join(lines) + "\n").encode())
    atomic_write(out / "report.json", json.dumps(report, indent=1, default=str).encode())
    with transaction(sessions) as session:
        run = session.get(RetrainRun, run_id)
        if run is not None:
            run.state = "accepted" if verdict.accepted else "refused"
            run.labels_used, run.report, run.path = added.labels_used, report, str(out)
            run.candidate_version, run.model_id = version, model_id
    return report


def run_retrain_job(
    settings: ServerSettings, sessions: sessionmaker[Session], job_id: str, fit: Fit | None = None
) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        job.state, job.updated_at = "running", now
        if session.get(RetrainRun, job_id) is None:
            session.add(
                RetrainRun(id=job_id, job_id=job_id, created_at=now, state="running", report={}, path="")
            )
    try:
        report = run_retrain(settings, sessions, job_id, fit=fit)
    except Exception:
        with transaction(sessions) as session:
            run = session.get(RetrainRun, job_id)
            if run is not None:
                run.state = "failed"
        raise
    gate = report["gate"]
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.state, job.progress, job.updated_at = "done", 1.0, datetime.now(UTC)
            job.result_path = str(settings.learning_dir / "retrain" / job_id / "report.md")
            job.message = ("candidate registered: " if gate["accepted"] else "candidate refused: ") + gate[
                "reason"
            ]


def new_run_id() -> str:
    return str(uuid.uuid4())
