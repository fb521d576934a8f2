"""Export benchmark: PyTorch vs ONNX FP32/INT8 vs TFLite FP32/INT8, measured in one run.

Per format: file size, median bare-inference latency at 320 and 640 px with 1 and 2 threads, and
mAP50 on the test split of `shared/data/camtrap-dev` (prepared as `trapline train prepare` does),
each as a ratio to PyTorch. Run: `python -m bench.export [--weights best.pt]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

# the development data beside the checkout (`make bench` runs from the repository's root)
SHARED = Path(os.environ.get("TRAPLINE_SHARED", "../shared"))
FORMATS = ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")
SIZES = (320, 640)
THREADS = (1, 2)


def _torch_latency(weights: Path, imgsz: int, threads: int, runs: int) -> float:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    model = YOLO(str(weights)).model.eval()
    x = torch.rand(1, 3, imgsz, imgsz)
    timings = []
    with torch.inference_mode():
        model(x)
        for _ in range(runs):
            started = time.perf_counter()
            model(x)
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _backend_latency(path: Path, threads: int, runs: int) -> float:
    from trapline.edge.backends import load_backend

    backend = load_backend(path, threads=threads)
    spec = backend.info.input
    tensor = np.zeros(spec.shape, spec.dtype)
    backend.run(tensor)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        backend.run(tensor)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _quiet_ultralytics() -> None:
    import logging

    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)  # export chatter would bury the table


def run_table(weights: Path, runs: int) -> Table:
    from trapline.export.exporter import EXPORT_TARGETS
    from trapline.training.evaluate import evaluate
    from trapline.training.fit import offline_environment
    from trapline.training.prepare import prepare

    _quiet_ultralytics()
    camtrap = SHARED / "data" / "camtrap-dev"
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        work = Path(tmp)
        offline_environment(work / ".ultralytics")
        task = progress.add_task("preparing the test split", total=2 + len(FORMATS) * (len(SIZES) + 1))
        prepared = prepare(
            camtrap / "images",
            work / "dataset",
            megadetector=camtrap / "megadetector.json",
            md_threshold=0.5,
            yolo_labels=camtrap / "labels" / "pw-example",
            yolo_classes=["animal"],
        )
        local = work / weights.name
        local.write_bytes(weights.read_bytes())
        progress.advance(task)
        progress.update(task, description="PyTorch")
        reference = evaluate(local, prepared.data_yaml, "test", 640)
        rows["PyTorch"] = {
            "size": local.stat().st_size,
            "map50": reference.map50,
            "animal_ap50": reference.per_class["animal"]["ap50"],
            **{f"{s}/{t}": _torch_latency(local, s, t, runs) for s in SIZES for t in THREADS},
        }
        progress.advance(task)
        for key in FORMATS:
            row: dict[str, Any] = {}
            for size in SIZES:
                progress.update(task, description=f"{key} at {size}")
                path = EXPORT_TARGETS[key].make(local, work, size, prepared.data_yaml)
                for threads in THREADS:
                    row[f"{size}/{threads}"] = _backend_latency(path, threads, runs)
                if size == 640:
                    scored = evaluate(path, prepared.data_yaml, "test", 640)
                    row["size"] = path.stat().st_size
                    row["map50"] = scored.map50
                    row["animal_ap50"] = scored.per_class["animal"]["ap50"]
                progress.advance(task)
            rows[key] = row
            progress.advance(task)
    base = rows["PyTorch"]
    table = Table(
        title=f"Export formats of {weights.name}: bare inference ms (ratio = PyTorch / format) and test mAP50"
    )
    table.add_column("format")
    table.add_column("size MB", justify="right")
    for size in SIZES:
        for threads in THREADS:
            table.add_column(f"{size}px {threads}T ms (x)", justify="right")
    table.add_column("mAP50 (vs PyTorch)", justify="right")
    # mAP50 averages over classes present; in this small test split one class has 1 instance
    table.add_column("animal AP50 (vs PyTorch)", justify="right")
    for name, row in rows.items():
        cells = [name, f"{row['size'] / 1e6:.1f}"]
        for size in SIZES:
            for threads in THREADS:
                key = f"{size}/{threads}"
                cells.append(f"{row[key]:.1f} ({base[key] / row[key]:.2f}x)")
        cells.append(f"{row['map50']:.3f} ({(row['map50'] - base['map50']) * 100:+.1f} pt)")
        cells.append(f"{row['animal_ap50']:.3f} ({(row['animal_ap50'] - base['animal_ap50']) * 100:+.1f} pt)")
        table.add_row(*cells)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / "yolov8n-coco.pt")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        Console().print(f"[yellow]export benchmark skipped: {args.weights} not found")
        return 0
    Console(width=220).print(run_table(args.weights, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
