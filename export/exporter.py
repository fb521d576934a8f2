"""`trapline export`: PyTorch checkpoint -> ONNX FP32/INT8 and TFLite FP32/INT8, each checked.

The targets table below is what the exporter writes; `trapline.formats` (which it refers to) is
what the trap loads. Every export is scored with the one evaluator (training.evaluate: the trap's
own pre/post-processing for every format, the PyTorch checkpoint included) on the same split; an
INT8 export losing more than `max_map50_drop` points of mAP50 against the FP32 export of its own
format fails the check. Each INT8 model's agreement with its FP32 model (mAP50 of the INT8 boxes
against the FP32 boxes as truth, on every photo of the split) measures the quantization damage alone,
without the noise of a small labelled split.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from trapline.export.calibration import calibration_photos
from trapline.export.litert_int8 import DEFAULT_RECIPE, quantize_litert
from trapline.export.onnx_int8 import quantize_int8
from trapline.formats import MODEL_FORMATS, ModelFormat

log = logging.getLogger(__name__)
CALIBRATION_PHOTOS = 96


class ExportCheckError(RuntimeError):
    """An INT8 export loses too much accuracy against its FP32 model."""


@dataclass(frozen=True)
class ExportTarget:
    key: str
    format: ModelFormat
    int8: bool
    fp32_key: str  # the float export an INT8 one is quantized from and judged against
    make: Callable[[Path, Path, int, Path, str], Path]  # (weights, out, imgsz, dataset, recipe) -> file


def _ultralytics_export(weights: Path, imgsz: int, **options: object) -> Path:
    from ultralytics import YOLO

    return Path(YOLO(str(weights)).export(imgsz=imgsz, **options))


def _onnx_fp32(weights: Path, out: Path, imgsz: int, dataset: Path, recipe: str) -> Path:
    target = out / f"{weights.stem}-{imgsz}-fp32.onnx"
    if not target.exists():
        shutil.move(_ultralytics_export(weights, imgsz, format="onnx", simplify=True), target)
    return target


def _onnx_int8(weights: Path, out: Path, imgsz: int, dataset: Path, recipe: str) -> Path:
    fp32 = _onnx_fp32(weights, out, imgsz, dataset, recipe)
    photos = calibration_photos(dataset, CALIBRATION_PHOTOS)
    return quantize_int8(fp32, out / f"{weights.stem}-{imgsz}-int8.onnx", photos, max_images=len(photos))


def _tflite_fp32(weights: Path, out: Path, imgsz: int, dataset: Path, recipe: str) -> Path:
    target = out / f"{weights.stem}-{imgsz}-fp32.tflite"
    if not target.exists():
        shutil.move(_ultralytics_export(weights, imgsz, format="tflite"), target)
    return target


def _tflite_int8(weights: Path, out: Path, imgsz: int, dataset: Path, recipe: str) -> Path:
    fp32 = _tflite_fp32(weights, out, imgsz, dataset, recipe)
    photos = calibration_photos(dataset, CALIBRATION_PHOTOS)
    return quantize_litert(fp32, out / f"{weights.stem}-{imgsz}-{recipe}.tflite", photos, recipe)


_BY_KEY = {f.key: f for f in MODEL_FORMATS}
EXPORT_TARGETS: dict[str, ExportTarget] = {
    t.key: t
    for t in (
        ExportTarget("onnx-fp32", _BY_KEY["onnx"], False, "onnx-fp32", _onnx_fp32),
        ExportTarget("onnx-int8", _BY_KEY["onnx"], True, "onnx-fp32", _onnx_int8),
        ExportTarget("tflite-fp32", _BY_KEY["tflite"], False, "tflite-fp32", _tflite_fp32),
        ExportTarget("tflite-int8", _BY_KEY["tflite"], True, "tflite-fp32", _tflite_int8),
    )
}


@dataclass
class ExportResult:
    target: str
    path: str
    size_bytes: int
    split: str
    map50: float
    pytorch_map50: float
    fp32_map50: float
    map50_drop_points: float  # against the FP32 export of the same format
    agreement_with_fp32: float | None  # mAP50 against the FP32 model's own boxes
    passed: bool
    recipe: str | None = None


def agreement(model: Path, reference: Path, dataset: Path, split: str) -> float:
    """mAP50 of `model`'s boxes with `reference`'s boxes (conf >= 0.25) as truth, on every photo."""
    import cv2

    from trapline.training.evaluate import Dataset, load_model
    from trapline.training.metrics import ImageResult, coco_matches

    data = Dataset.load(dataset)
    ours, theirs = load_model(model), load_model(reference)
    results = []
    for record in data.split(split):
        image = cv2.imread(str(data.path(record)))
        if image is None:
            raise ValueError(f"cannot read {data.path(record)}")
        truth = [b for b in theirs.predict(image) if b.conf >= 0.25]
        results.append(
            ImageResult(
                record.file, record.site, record.width, record.height, truth, True, None, ours.predict(image)
            )
        )
    matches = coco_matches(results, ours.classes)
    return float(sum(matches.ap50.values()) / len(matches.ap50)) if matches.ap50 else float("nan")


def export_markdown(results: list[ExportResult], max_map50_drop: float) -> str:
    """The export checks as a Markdown section (the bundle's report carries it)."""
    split = results[0].split if results else "?"
    lines = [
        f"## Export checks ({split} split, one evaluator for every format)",
        "",
        "| export | MB | mAP50 | FP32 of its format | points lost | agreement with FP32 | check |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        agree = f"{r.agreement_with_fp32:.3f}" if r.agreement_with_fp32 is not None else ""
        name = f"{r.target} ({r.recipe})" if r.recipe else r.target
        check = ("pass" if r.passed else "FAIL") if r.agreement_with_fp32 is not None else ""
        cells = [name, f"{r.size_bytes / 1e6:.1f}", f"{r.map50:.3f}", f"{r.fp32_map50:.3f}"]
        cells += [f"{r.map50_drop_points:+.1f}", agree, check]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"PyTorch checkpoint on the same split: mAP50 {results[0].pytorch_map50:.3f}." if results else "",
        f"An INT8 export passes within {max_map50_drop} mAP50 points of its FP32 model; agreement is the INT8"
        " model's mAP50 with the FP32 model's own boxes (conf >= 0.25) as truth.",
        "",
    ]
    return "\n".join(lines)


def export_all(
    weights: Path,
    dataset: Path,
    out: Path,
    targets: list[str],
    imgsz: int = 640,
    max_map50_drop: float = 1.0,
    split: str = "val",
    recipe: str = DEFAULT_RECIPE,
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
    score: dict[Path, float] = {}

    def map50(path: Path) -> float:
        if path not in score:
            score[path] = evaluate(path, dataset, split, thresholds=0.25, imgsz=imgsz).boxes["map50"] or 0.0
        return score[path]

    reference = map50(local)
    results = []
    for key in targets:
        target = EXPORT_TARGETS[key]
        path = target.make(local, out, imgsz, dataset, recipe)
        fp32 = EXPORT_TARGETS[target.fp32_key].make(local, out, imgsz, dataset, recipe)
        drop = (map50(fp32) - map50(path)) * 100
        agree = agreement(path, fp32, dataset, split) if target.int8 else None
        results.append(
            ExportResult(
                key,
                str(path),
                path.stat().st_size,
                split,
                map50(path),
                reference,
                map50(fp32),
                drop,
                agree,
                not target.int8 or drop <= max_map50_drop,
                recipe if key == "tflite-int8" else None,
            )  # fmt: skip
        )
        log.info(
            "%s: %s mAP50 %.3f (FP32 %.3f, drop %.1f points)", key, split, map50(path), map50(fp32), drop
        )
    (out / "export_report.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    (out / "export_report.md").write_text(export_markdown(results, max_map50_drop))
    failed = [r for r in results if not r.passed]
    if failed:
        raise ExportCheckError(
            f"INT8 export lost too much accuracy on the {split} split: "
            + "; ".join(
                f"{r.target} mAP50 {r.map50:.3f} vs FP32 {r.fp32_map50:.3f}"
                f" ({r.map50_drop_points:.1f} points > {max_map50_drop})"
                for r in failed
            )
        )
    return results
