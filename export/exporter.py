"""`trapline export`: PyTorch checkpoint -> ONNX FP32/INT8 and TFLite FP32/INT8, each checked.

The targets table below is what the exporter writes; `trapline.formats` (which it refers to) is
what the trap loads. Every export is scored on the val split with the trap's own detector and
compared with the PyTorch model: an INT8 export losing more than `max_map50_drop` points of mAP50
fails the export.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from trapline.export.onnx_int8 import quantize_int8
from trapline.formats import MODEL_FORMATS, ModelFormat

log = logging.getLogger(__name__)


class ExportCheckError(RuntimeError):
    """An export loses too much accuracy against the PyTorch model."""


@dataclass(frozen=True)
class ExportTarget:
    key: str
    format: ModelFormat
    int8: bool
    make: Callable[[Path, Path, int, Path], Path]  # (weights, out dir, imgsz, data.yaml) -> file


def _ultralytics_export(weights: Path, imgsz: int, **options: object) -> Path:
    from ultralytics import YOLO

    return Path(YOLO(str(weights)).export(imgsz=imgsz, **options))


def _onnx_fp32(weights: Path, out: Path, imgsz: int, data: Path) -> Path:
    target = out / f"{weights.stem}-{imgsz}-fp32.onnx"
    shutil.move(_ultralytics_export(weights, imgsz, format="onnx", simplify=True), target)
    return target


def _onnx_int8(weights: Path, out: Path, imgsz: int, data: Path) -> Path:
    fp32 = out / f"{weights.stem}-{imgsz}-fp32.onnx"
    if not fp32.exists():
        _onnx_fp32(weights, out, imgsz, data)
    import yaml

    spec = yaml.safe_load(data.read_text())
    train = Path(spec["path"]) / spec["train"]
    images = sorted(p for p in train.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return quantize_int8(fp32, out / f"{weights.stem}-{imgsz}-int8.onnx", images)


def _tflite(weights: Path, out: Path, imgsz: int, data: Path, int8: bool) -> Path:
    kind = "int8" if int8 else "fp32"
    options: dict[str, object] = {"format": "tflite"}
    if int8:
        options.update(quantize=8, data=str(data))
    target = out / f"{weights.stem}-{imgsz}-{kind}.tflite"
    shutil.move(_ultralytics_export(weights, imgsz, **options), target)
    return target


_BY_KEY = {f.key: f for f in MODEL_FORMATS}
EXPORT_TARGETS: dict[str, ExportTarget] = {
    t.key: t
    for t in (
        ExportTarget("onnx-fp32", _BY_KEY["onnx"], False, _onnx_fp32),
        ExportTarget("onnx-int8", _BY_KEY["onnx"], True, _onnx_int8),
        ExportTarget("tflite-fp32", _BY_KEY["tflite"], False, lambda w, o, i, d: _tflite(w, o, i, d, False)),
        ExportTarget("tflite-int8", _BY_KEY["tflite"], True, lambda w, o, i, d: _tflite(w, o, i, d, True)),
    )
}


@dataclass
class ExportResult:
    target: str
    path: str
    size_bytes: int
    val_map50: float
    pytorch_val_map50: float
    map50_drop_points: float
    passed: bool


def export_all(
    weights: Path,
    data_yaml: Path,
    out: Path,
    targets: list[str],
    imgsz: int = 640,
    max_map50_drop: float = 1.0,
) -> list[ExportResult]:
    from trapline.training.evaluate import evaluate
    from trapline.training.fit import offline_environment

    offline_environment(out / ".ultralytics")
    unknown = set(targets) - set(EXPORT_TARGETS)
    if unknown:
        raise ValueError(f"unknown export targets {sorted(unknown)}; known: {sorted(EXPORT_TARGETS)}")
    out.mkdir(parents=True, exist_ok=True)
    local = out / weights.name
    if local.resolve() != weights.resolve():
        shutil.copyfile(weights, local)  # Ultralytics writes exports next to the weights
    reference = evaluate(local, data_yaml, "val", imgsz).map50
    results = []
    for key in targets:
        target = EXPORT_TARGETS[key]
        path = target.make(local, out, imgsz, data_yaml)
        score = evaluate(path, data_yaml, "val", imgsz).map50
        drop = (reference - score) * 100
        passed = not target.int8 or drop <= max_map50_drop
        results.append(ExportResult(key, str(path), path.stat().st_size, score, reference, drop, passed))
        log.info("%s: val mAP50 %.3f (PyTorch %.3f, drop %.1f points)", key, score, reference, drop)
    (out / "export_report.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    failed = [r for r in results if not r.passed]
    if failed:
        raise ExportCheckError(
            "INT8 export lost too much accuracy on the val split: "
            + "; ".join(
                f"{r.target} mAP50 {r.val_map50:.3f} vs PyTorch {r.pytorch_val_map50:.3f}"
                f" ({r.map50_drop_points:.1f} points > {max_map50_drop})"
                for r in failed
            )
        )
    return results
