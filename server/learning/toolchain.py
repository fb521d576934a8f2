"""The one place the server calls `training/` and `export/` (fine-tune, evaluate, INT8 export,
signed bundle) and registers a release candidate. When those packages change their API, only this
module changes; nothing here re-implements them."""

from __future__ import annotations

import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from trapline.manifest import ModelManifest
from trapline.server.core.config import ServerSettings
from trapline.server.models import ModelVersion


class SigningKeyError(RuntimeError):
    """The operator's signing key is missing or readable by others."""


def check_signing_key(path: Path | None) -> Path:
    """The operator's private key: configured, present, and readable by its owner only (0600)."""
    if path is None:
        raise SigningKeyError(
            "no signing key configured: create one with `trapline keys generate --out DIR` and set"
            " TRAPLINE_SERVER_SIGNING_KEY to DIR/trapline-release.key"
        )
    if not path.is_file():
        raise SigningKeyError(f"signing key {path} does not exist (`trapline keys generate` makes one)")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise SigningKeyError(f"signing key {path} has mode {mode:04o}: make it 0600 (chmod 600 {path})")
    return path


def fit(data_yaml: Path, weights: Path, out: Path, epochs: int, imgsz: int, seed: int = 0) -> Path:
    """Fine-tune from `weights`; the checkpoint after the last epoch. Ultralytics' own plots are
    off: the job writes its evaluation report, and the training curves stay in results.csv."""
    from trapline.training.fit import fit as train

    return train(
        data_yaml, weights, out, epochs=epochs, imgsz=imgsz, batch=8, seed=seed, patience=0, workers=0,
        plots=False,
    )  # fmt: skip


def evaluate(
    model: Path, data_yaml: Path, imgsz: int, split: str = "test", role: str = "model"
) -> dict[str, Any]:
    """`model` scored on a split by `train evaluate` (thresholds 0.25): its flat numbers (what the
    gate reads, training.evaluate.headline) and, under "report", the whole report."""
    from trapline.training.evaluate import evaluate as score
    from trapline.training.evaluate import headline

    report = asdict(score(model, data_yaml, split, thresholds=0.25, imgsz=imgsz, role=role))
    return {**headline(report), "report": report}


def write_evaluation(current: dict[str, Any], new: dict[str, Any], out: Path) -> Path:
    """`train evaluate`'s report files for the new model with the current one as baseline."""
    from trapline.training.evaluate import ModelReport, write_report

    reports = [
        ModelReport(**{**new["report"], "role": "candidate"}),
        ModelReport(**{**current["report"], "role": "base"}),
    ]
    return write_report(reports, out, "Retrained candidate vs current model (test split)")


def export_int8(weights: Path, data_yaml: Path, out: Path, imgsz: int, max_drop: float) -> tuple[Path, Path]:
    """The INT8 ONNX the traps run (with the exporter's accuracy check); (model, export report)."""
    from trapline.export.exporter import export_all

    (result,) = export_all(weights, data_yaml, out, ["onnx-int8"], imgsz, max_drop)
    return Path(result.path), out / "export_report.json"


def sign_bundle(
    model: Path, out: Path, name: str, version: str, key: Path, evaluation: Path, export_report: Path,
    provenance: dict[str, Any],
) -> ModelManifest:  # fmt: skip
    from trapline.export.bundle import build_bundle, bundle_metrics

    metrics = bundle_metrics(evaluation, export_report)
    return build_bundle(model, out, name, version, key, metrics=metrics, provenance=provenance,
                        extra_files=[evaluation], archive=True)  # fmt: skip


def register_candidate(
    session: Session,
    settings: ServerSettings,
    manifest: ModelManifest,
    bundle_dir: Path,
    gate: dict[str, Any],
) -> int:
    """Register the signed bundle as a release the traps can download (the same way as
    `trapline server release add`; not rolled out: an operator starts the rollout), its model
    version marked a release candidate with the gate's verdict. Returns the model id. The caller
    commits."""
    from trapline.server.ota.releases import register_release

    release = register_release(session, settings, bundle_dir.parent / f"{bundle_dir.name}.tar.gz")
    model = session.get(ModelVersion, release.model_id)
    if model is None:  # register_release has just created or found it
        raise RuntimeError(f"release {release.id} has no model version")
    model.metrics = {**manifest.metrics, "release_candidate": True, "gate": gate}
    return model.id
