"""`trapline export bundle`: a model file + its evaluation -> a signed bundle directory."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import yaml

from trapline.bundle import pack_bundle, sign_bundle
from trapline.edge.backends import load_backend
from trapline.edge.config import PACKAGED_SAMPLES
from trapline.edge.detector import Detector
from trapline.edge.imaging import decode_image
from trapline.edge.model_info import COCO_CATEGORIES, _literal
from trapline.formats import format_for_path
from trapline.manifest import (
    InputSpec,
    ModelManifest,
    ReferenceDetection,
    ReferenceFrame,
    SelfTest,
    Thresholds,
)
from trapline.model_source import ModelSource

# Reference frames a trap's self-test runs before it switches to a new model: two animals, one
# animal, an empty scene. Shrunk so the three add about 100 kB to a bundle.
DEFAULT_REFERENCE_FRAMES = tuple(
    PACKAGED_SAMPLES / name
    for name in ("buow-RCNX1419.jpg", "cougar-39858-0.jpg", "coyote-51472-810-empty.jpg")
)
REFERENCE_PX = 640
_REFERENCE_MAX_PIXELS = 100_000_000


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


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities as None: JSON has no NaN (a browser refuses the document)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def bundle_metrics(
    evaluation: Path | None, export_report: Path | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a bundle says about its quality: `train evaluate`'s report.json (the shipped model first,
    then the models it is compared with, e.g. teacher and base, on the test split), `trapline
    export`'s checks (on the val split), and anything else measured (quantization, bursts,
    latency). `test_split` and `test_split_baseline` (the base model's, else the next report's) are
    the flat numbers and curves the dashboard shows (training.evaluate.headline)."""
    from trapline.training.evaluate import headline

    metrics: dict[str, Any] = {}
    if evaluation is not None:
        reports = json.loads(evaluation.read_text())
        metrics["evaluation"] = [{k: r[k] for k in _REPORTED if k in r} for r in reports]
        metrics["test_split"] = headline(reports[0])
        others = reports[1:]
        baseline = next((r for r in others if r.get("role") == "base"), others[0] if others else None)
        if baseline is not None:
            metrics["test_split_baseline"] = headline(baseline)
    if export_report is not None:
        metrics["export_checks_val_split"] = json.loads(export_report.read_text())
    metrics.update(extra or {})
    return dict(finite_json(metrics))


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


def write_reference_frames(pictures: list[Path], out: Path) -> list[str]:
    """Shrunk JPEG copies of `pictures` in `out` (reference-<n>.jpg); their names."""
    names = []
    for index, picture in enumerate(pictures):
        image = decode_image(picture.read_bytes(), _REFERENCE_MAX_PIXELS)
        scale = REFERENCE_PX / max(image.shape[:2])
        if scale < 1:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise ValueError(f"{picture}: cannot encode a reference frame")
        name = f"reference-{index}.jpg"
        (out / name).write_bytes(jpeg.tobytes())
        names.append(name)
    return names


def expected_detections(model_file: Path, frames: list[str], manifest: ModelManifest) -> SelfTest:
    """What the model finds in each reference frame, with the trap's own detector configured by
    `manifest` (classes, input, thresholds) as a trap is: the self-test a trap repeats before
    switching to this model."""
    detector = Detector(ModelSource(model_file, model_file.read_bytes(), manifest, signed=False))
    recorded = []
    for name in frames:
        image = decode_image((model_file.parent / name).read_bytes(), _REFERENCE_MAX_PIXELS)
        found = detector.detect(image).detections
        recorded.append(
            ReferenceFrame(
                file=name,
                detections=[ReferenceDetection(category=d.category, conf=d.conf, bbox=d.bbox) for d in found],
            )
        )
    return SelfTest(frames=recorded)


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
    reference_frames: list[Path] | None = None,
    min_agent_version: str | None = None,
) -> ModelManifest:
    """Copy `model` (and extra files such as the evaluation report) into `out`, record what it
    finds in the reference frames (default: three packaged samples; [] for none), sign it."""
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
    pictures = list(DEFAULT_REFERENCE_FRAMES) if reference_frames is None else reference_frames
    references = write_reference_frames(pictures, out)
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
        metrics=finite_json(json.loads(json.dumps(metrics or {}, default=str))),
        min_agent_version=min_agent_version,
    )
    manifest = sign_bundle(out, manifest, private_key)
    if references:
        self_test = expected_detections(out / model_name, references, manifest)
        manifest = sign_bundle(out, manifest.model_copy(update={"self_test": self_test}), private_key)
    if archive:
        pack_bundle(out, out.parent / f"{out.name}.tar.gz")  # not with_suffix: "bundle-1.2"
    return manifest
