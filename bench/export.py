"""Export and quantization benchmark: every format and LiteRT INT8 recipe, measured in one run.

Per row: file size, median bare-inference ms at 320/416/640 px with 1 and 2 threads, and - at the
size the model was trained at - mAP50 on the test split with the one evaluator (training.evaluate),
the points lost against the FP32 model of the same format, and the agreement of the INT8 boxes with
the FP32 boxes (mAP50 with the FP32 boxes as truth: the quantization damage alone). The gate: an
INT8 model ships as default only within 1 point of FP32 on test.
Run: `python -m bench.export [--weights best.pt --dataset build/model/dataset]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.timing import median_ms

# the development data beside the checkout (`make bench` runs from the repository's root)
SHARED = Path(os.environ.get("TRAPLINE_SHARED", "../shared"))
SIZES = (320, 416, 640)
THREADS = (1, 2)
GATE_POINTS = 1.0
LATENCY_CALIBRATION = 8  # photos: latency does not depend on calibration, accuracy is measured apart


def _torch_latency(weights: Path, imgsz: int, threads: int, runs: int) -> float:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    model = YOLO(str(weights)).model.eval()
    x = torch.rand(1, 3, imgsz, imgsz)
    with torch.inference_mode():
        return median_ms(lambda: model(x), runs)


def _backend_latency(path: Path, threads: int, runs: int) -> float:
    from trapline.edge.backends import load_backend

    backend = load_backend(path, threads=threads)
    spec = backend.info.input
    tensor = np.zeros(spec.shape, spec.dtype)
    return median_ms(lambda: backend.run(tensor), runs)


def _quiet() -> None:
    import logging
    import os

    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)  # export chatter would bury the table
    os.environ.setdefault("TQDM_DISABLE", "1")


def _default_dataset(work: Path) -> Path:
    """camtrap-dev prepared as `trapline train prepare` does (MegaDetector and human labels)."""
    from trapline.training.prepare import prepare

    camtrap = SHARED / "data" / "camtrap-dev"
    prepared = prepare(
        camtrap / "images", work / "dataset", megadetector=camtrap / "megadetector.json", md_threshold=0.5,
        yolo_labels=camtrap / "labels" / "pw-example", yolo_classes=["animal"],
        species_csv=camtrap / "species.csv",
    )  # fmt: skip
    return prepared.data_yaml.parent


def _trained_size(weights: Path) -> int:
    from trapline.training.evaluate import _checkpoint_imgsz

    return _checkpoint_imgsz(weights)


def measure(weights: Path, dataset: Path, recipes: list[str], runs: int, work: Path) -> list[dict[str, Any]]:
    """One row per format/recipe (see the module doc); exports go to `work`."""
    from trapline.export.calibration import calibration_photos
    from trapline.export.exporter import CALIBRATION_PHOTOS, agreement
    from trapline.export.litert_int8 import quantize_litert
    from trapline.export.onnx_int8 import quantize_int8
    from trapline.training.evaluate import evaluate
    from trapline.training.fit import offline_environment

    offline_environment(work / ".ultralytics")
    _quiet()
    local = work / weights.name
    shutil.copyfile(weights, local)
    trained = _trained_size(weights)
    photos = calibration_photos(dataset, CALIBRATION_PHOTOS)
    rows: dict[str, dict[str, Any]] = {"pytorch": {"format": "PyTorch FP32", "path": local}}
    rows["onnx-fp32"] = {"format": "ONNX FP32"}
    rows["onnx-int8"] = {"format": "ONNX Runtime INT8 (QDQ, float head)", "fp32": "onnx-fp32"}
    rows["tflite-fp32"] = {"format": "LiteRT FP32"}
    for recipe in recipes:
        rows[recipe] = {"format": f"LiteRT INT8 {recipe}", "fp32": "tflite-fp32", "recipe": recipe}
    from ultralytics import YOLO

    with Progress() as progress:
        task = progress.add_task("exporting", total=len(SIZES) * (len(rows) - 1))
        for size in SIZES:
            calibration = photos if size == trained else photos[:LATENCY_CALIBRATION]
            onnx = work / f"{size}-fp32.onnx"
            shutil.move(YOLO(str(local)).export(format="onnx", imgsz=size, simplify=True), onnx)
            tflite = work / f"{size}-fp32.tflite"
            shutil.move(YOLO(str(local)).export(format="tflite", imgsz=size), tflite)
            paths = {
                "onnx-fp32": onnx,
                "onnx-int8": quantize_int8(onnx, work / f"{size}-int8.onnx", calibration, len(calibration)),
                "tflite-fp32": tflite,
            }
            for recipe in recipes:
                progress.update(task, description=f"{recipe} at {size}")
                paths[recipe] = quantize_litert(tflite, work / f"{size}-{recipe}.tflite", calibration, recipe)
            for key, path in paths.items():
                for threads in THREADS:
                    rows[key][f"{size}/{threads}"] = _backend_latency(path, threads, runs)
                if size == trained:
                    rows[key]["path"] = path
                    rows[key]["size"] = path.stat().st_size
                progress.advance(task)
        for threads in THREADS:
            for size in SIZES:
                rows["pytorch"][f"{size}/{threads}"] = _torch_latency(local, size, threads, runs)
        rows["pytorch"]["size"] = local.stat().st_size
        progress.update(task, description="scoring on test")
        for row in rows.values():
            row["map50"] = evaluate(row["path"], dataset, "test", thresholds=0.25, imgsz=trained).boxes[
                "map50"
            ]
        for row in rows.values():
            if "fp32" in row:
                reference = rows[row["fp32"]]
                row["drop"] = (reference["map50"] - row["map50"]) * 100
                row["agreement"] = agreement(row["path"], reference["path"], dataset, "test")
                row["passed"] = row["drop"] <= GATE_POINTS
    for row in rows.values():
        row["path"] = str(row["path"])
    return list(rows.values())


def table(rows: list[dict[str, Any]], title: str) -> Table:
    out = Table(title=title)
    out.add_column("format / recipe")
    out.add_column("MB", justify="right")
    for size in SIZES:
        for threads in THREADS:
            out.add_column(f"{size}px {threads}T ms", justify="right")
    for column in ("test mAP50", "points vs FP32", "agreement w/ FP32", f"gate (<= {GATE_POINTS} pt)"):
        out.add_column(column, justify="right")
    for row in rows:
        cells = [row["format"], f"{row['size'] / 1e6:.1f}"]
        cells += [f"{row[f'{s}/{t}']:.1f}" for s in SIZES for t in THREADS]
        cells.append(f"{row['map50']:.3f}")
        cells.append(f"{-row['drop']:+.1f}" if "drop" in row else "")
        cells.append(f"{row['agreement']:.3f}" if "agreement" in row else "")
        cells.append(("pass" if row["passed"] else "FAIL") if "passed" in row else "")
        out.add_row(*cells)
    return out


def main(argv: list[str] | None = None) -> int:
    from trapline.export.litert_int8 import RECIPES

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "yolov8n-coco.pt")
    parser.add_argument("--dataset", type=Path, help="prepared dataset (default: camtrap-dev, prepared now)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="LiteRT INT8 recipes to measure")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        Console().print(f"[yellow]export benchmark skipped: {args.weights} not found")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = args.dataset or _default_dataset(work)
        rows = measure(args.weights, dataset, args.recipes.split(","), args.runs, work)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    title = f"Formats and INT8 recipes of {args.weights.name}: bare inference ms, and mAP50 on test"
    Console(width=240).print(table(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
