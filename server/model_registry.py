"""Registering a model release: its verified bundle's manifest and the curves the dashboard charts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from trapline.bundle import verify_bundle
from trapline.export.bundle import finite_json
from trapline.keyring import Keyring
from trapline.manifest import ModelManifest
from trapline.server.models import ModelVersion

REPORT = "report.json"
# what the models page charts; older bundles carry them only in their (signed) report.json
CHARTED = ("classes", "confusion", "threshold_curve", "pr_curves", "conf_threshold", "per_class")


def dashboard_metrics(folder: Path, manifest: ModelManifest) -> dict[str, Any]:
    """The manifest's metrics, completed from the bundle's report.json when the manifest lists it
    (its hash is signed, so it is as trustworthy as the manifest)."""
    metrics: dict[str, Any] = json.loads(json.dumps(manifest.metrics))
    if REPORT in manifest.files:
        report = json.loads((folder / REPORT).read_text())
        for section, key in (("model", "test_split"), ("baseline", "test_split_baseline")):
            # report.json of older bundles: {"model": ..., "baseline": ...}; newer ones put the
            # charted fields in the manifest's metrics already (a list of model reports)
            if isinstance(report, dict) and isinstance(report.get(section), dict) and key in metrics:
                for name in CHARTED:
                    if name in report[section]:
                        metrics[key].setdefault(name, report[section][name])
    return dict(finite_json(metrics))


def register_bundle(session: Session, folder: Path, trust: Keyring | Path) -> ModelVersion:
    """Verify the bundle (BundleError if it does not check out) and add it as a model version."""
    manifest = verify_bundle(folder, trust)
    row = ModelVersion(
        name=manifest.name,
        version=manifest.version,
        sha256=manifest.files[manifest.model_file],
        metrics=dashboard_metrics(folder, manifest),
        created_at=datetime.now(UTC),
    )
    session.add(row)
    return row
