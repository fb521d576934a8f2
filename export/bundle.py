"""`trapline export bundle`: a model file + its evaluation -> a signed bundle directory."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trapline.bundle import pack_bundle, sign_bundle
from trapline.edge.backends import load_backend
from trapline.edge.model_info import COCO_CATEGORIES, _literal
from trapline.formats import format_for_path
from trapline.manifest import InputSpec, ModelManifest, Thresholds


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


_REPORTED = ("model", "role", "split", "thresholds", "thresholds_how", "image", "boxes", "boxes_independent",
             "per_site")  # fmt: skip
_TRAINING_ARGS = ("model", "epochs", "imgsz", "batch", "seed", "freeze", "optimizer", "patience", "device")


def bundle_metrics(
    evaluation: Path | None, export_report: Path | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a bundle says about its quality: `train evaluate`'s report.json (the shipped model first,
    then the models it is compared with, e.g. teacher and base, on the test split), `trapline
    export`'s checks, and anything else measured (quantization, bursts, latency)."""
    metrics: dict[str, Any] = {}
    if evaluation is not None:
        reports = json.loads(evaluation.read_text())
        metrics["evaluation"] = [{k: r[k] for k in _REPORTED if k in r} for r in reports]
        metrics["test_split"] = headline(reports[0])
    if export_report is not None:
        metrics["export_checks"] = json.loads(export_report.read_text())
    metrics.update(extra or {})
    return metrics


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The shipped model's few numbers that lists show (the server's models page reads these)."""
    image, boxes = report["image"], report["boxes"]
    animal = boxes["per_class"].get("animal", {})
    return {
        "split": report["split"],
        "images": image.get("images"),
        "map50": boxes["map50"],
        "map50_95": boxes["map50_95"],
        "classes_present": boxes["classes_present"],
        "precision": animal.get("precision50"),
        "recall": boxes["box_recall50"],
        "image_accuracy": image.get("accuracy"),
        "empty_fp_rate": image.get("empty_fp_rate"),
        "animal_recall": image.get("animal_recall"),
    }


def thresholds_from(evaluation: Path, default: float = 0.25) -> Thresholds:
    """The shipped model's per-class thresholds as `train evaluate` chose them (on val)."""
    shipped = json.loads(evaluation.read_text())[0]
    how = " ".join(shipped.get("thresholds_how", {}).values())
    target = None
    if "precision >=" in how:
        target = float(how.split("precision >=")[1].split()[0])
    return Thresholds(conf=default, per_class=shipped["thresholds"], target_precision=target)


def training_provenance(run: Path) -> dict[str, Any]:
    """How the model was trained, from the Ultralytics run folder and the prepared dataset."""
    args = yaml.safe_load((run / "args.yaml").read_text())
    provenance: dict[str, Any] = {"training": {k: args.get(k) for k in _TRAINING_ARGS}}
    data_yaml = Path(str(args.get("data", "")))
    splits = data_yaml.parent / "splits.json"
    if splits.is_file():
        counts = Counter(json.loads(splits.read_text()).values())
        provenance["dataset"] = {"images_per_split": dict(sorted(counts.items()))}
    return provenance


def build_bundle(
    model: Path,
    out: Path,
    name: str,
    version: str,
    private_key: Path,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    extra_files: list[Path] | None = None,
    archive: bool = False,
) -> ModelManifest:
    """Copy `model` (and extra files such as the evaluation report) into `out`, sign it."""
    fmt = format_for_path(model)
    backend = load_backend(model)  # also proves the file loads
    meta = backend.info.metadata
    names_raw = _literal(meta.get("names"))
    if not isinstance(names_raw, dict):
        raise ValueError(f"{model}: no class names in the model's metadata")
    names = [str(names_raw[k]) for k in sorted(names_raw, key=int)]
    is_coco = len(names) == 80 and names[0] == "person"
    imgsz = _literal(meta.get("imgsz")) or [640, 640]
    spec = backend.info.input
    out.mkdir(parents=True, exist_ok=True)
    model_name = f"model{fmt.suffix}"
    shutil.copyfile(model, out / model_name)
    for extra in extra_files or []:
        shutil.copyfile(extra, out / extra.name)
    manifest = ModelManifest(
        name=name,
        version=version,
        format=fmt.key,
        model_file=model_name,
        input=InputSpec(
            height=int(imgsz[0]),
            width=int(imgsz[1]),
            dtype=str(spec.dtype),
            scale=spec.scale,
            zero_point=spec.zero_point,
        ),
        class_names=names,
        categories=[COCO_CATEGORIES.get(n) for n in names] if is_coco else None,
        thresholds=thresholds or Thresholds(),
        provenance={
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_model": model.name,
            "git_commit": _git_commit(),
            "ultralytics_metadata": {k: meta.get(k) for k in ("version", "date", "description") if k in meta},
            **(provenance or {}),
        },
        metrics=json.loads(json.dumps(metrics or {}, default=str)),
    )
    manifest = sign_bundle(out, manifest, private_key)
    if archive:
        pack_bundle(out, out.with_suffix(".tar.gz"))
    return manifest
