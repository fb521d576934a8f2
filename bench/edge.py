"""Edge benchmark: the agent's own time per frame against bare inference and Ultralytics' predict.

For each model, in separate processes (so peak RSS is each one's own), on the same sample photos:
- bare: the backend alone on a ready tensor (what inference costs, nothing else);
- agent before: decode at full scale in line with inference (the pipeline before issue 10);
- agent after: reduced-scale JPEG decode, one frame decoded ahead while the current one is in
  inference (edge.prefetch); both agents run the real `Agent.process_decoded` (bursts, spool
  with its SQLite fsync, pictures) and report wall-clock ms per frame over the whole run;
- ultralytics: `YOLO(model).predict(path)` on the same files, the baseline to beat.
Targets (ratios measured in this run, never fixed ms): agent after <= 1.15x bare inference, and at
least 1.5x faster than Ultralytics. The kinds run in turn, `--rounds` times, and each cell is
the median of its rounds: on a shared machine the speed drifts by up to half between minutes, and
kinds measured minutes apart gave ratios that drift with it. Run:
`python -m bench.edge [--frames N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from bench.timing import median_ms
from trapline.edge.config import PACKAGED_MODELS as PACKAGED
from trapline.edge.config import PACKAGED_SAMPLES as SAMPLES

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 3
TARGET_OVERHEAD = 1.15
TARGET_VS_ULTRALYTICS = 1.5


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a worker would report the
    # peak of the (torch-laden) parent that started it
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bare_worker(model: Path, frames: int) -> dict[str, Any]:
    from trapline.edge.agent import resolve_model
    from trapline.edge.backends import load_backend
    from trapline.edge.config import PACKAGED_KEYRING

    source = resolve_model(model, PACKAGED_KEYRING)
    backend = load_backend(source.path, threads=2, content=source.content)
    spec = backend.info.input
    tensor = np.zeros(spec.shape, spec.dtype)
    ms = median_ms(lambda: backend.run(tensor), frames, WARM_UP)
    return {"ms": ms, "backend": backend.key, "rss_mb": _peak_rss_mb()}


def _agent_worker(model: Path, frames: int, improved: bool) -> dict[str, Any]:
    from trapline.edge.agent import Agent
    from trapline.edge.config import AgentConfig
    from trapline.edge.prefetch import prefetched

    with tempfile.TemporaryDirectory() as tmp:
        source = {"type": "replay", "files": [str(SAMPLES)], "count": frames + WARM_UP}
        config = AgentConfig.model_validate(
            {
                "device_id": "bench",
                "source": source,
                "model": {"path": str(model), "threads": 2, "fallback_to_packaged": False},
                "spool": {"path": f"{tmp}/spool.sqlite"},
                "quarantine_dir": f"{tmp}/q",
                "pipeline": {"reduced_decode": improved, "prefetch": improved},
            }
        )
        agent = Agent(config)  # the MQTT link is built but not started: results stay spooled
        stream = prefetched(
            agent.source.frames(threading.Event(), lambda _key: False), agent.decoder, improved
        )
        inference = []
        started = 0.0
        for count, decoded in enumerate(stream):
            if count == WARM_UP:
                started = time.perf_counter()
            if decoded is not None:
                agent.process_decoded(decoded)
                inference.append(agent.last_inference_ms)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return {
            "ms": elapsed_ms / frames,
            "fps": frames / elapsed_ms * 1000,
            "inference_ms": statistics.median(inference[WARM_UP:]),
            "rss_mb": _peak_rss_mb(),
        }


def _ultralytics_worker(model: Path, frames: int) -> dict[str, Any]:
    from ultralytics import YOLO

    if model.is_dir():  # a bundle: Ultralytics runs the model file inside
        model = next(p for p in model.iterdir() if p.suffix in (".onnx", ".tflite"))
    files = sorted(SAMPLES.glob("*.jpg"))
    yolo = YOLO(str(model), task="detect")
    for index in range(WARM_UP):
        yolo.predict(str(files[index % len(files)]), verbose=False)
    started = time.perf_counter()
    for index in range(frames):
        yolo.predict(str(files[(index + WARM_UP) % len(files)]), verbose=False, conf=0.25)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {"ms": elapsed_ms / frames, "rss_mb": _peak_rss_mb()}


def _run_worker(kind: str, model: Path, frames: int) -> dict[str, Any]:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    command = [sys.executable, "-m", "bench.edge", "--worker", kind, "--model", str(model)]
    out = subprocess.run(
        [*command, "--frames", str(frames)], capture_output=True, text=True, check=True, env=env, cwd=ROOT
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


KINDS = ("bare", "agent-before", "agent-after", "ultralytics")


def _median_of_rounds(model: Path, frames: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Each kind's result with every number the median over rounds that interleave the kinds."""
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            runs[kind].append(_run_worker(kind, model, frames))
    medians: dict[str, dict[str, Any]] = {}
    for kind, results in runs.items():
        numbers = [key for key in results[0] if key != "backend"]
        medians[kind] = {key: statistics.median(float(r[key]) for r in results) for key in numbers}
        medians[kind]["backend"] = results[0].get("backend", "")
    return medians


def run_table(frames: int, models: list[tuple[str, Path]] | None = None, rounds: int = 3) -> Table:
    models = models or [
        ("trapline-nano (shipped bundle)", PACKAGED / "trapline-nano"),
        ("COCO YOLOv8n TFLite INT8 (stand-in)", PACKAGED / "yolov8n-coco-int8.tflite"),
    ]
    table = Table(
        title=f"Edge pipeline, {frames} frames of the sample photos (2 inference threads), median of {rounds}"
        " interleaved rounds: ms per frame,"
        f" targets agent <= {TARGET_OVERHEAD}x bare, >= {TARGET_VS_ULTRALYTICS}x faster than Ultralytics"
    )
    columns = (
        "model", "backend", "bare ms", "agent before ms (x bare)", "agent after ms (x bare)",
        "fps before -> after", "ultralytics ms", "after vs ultralytics", "targets", "agent RSS MB",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "backend", "targets") else "right")
    for name, model in track(models, description="benchmarking models"):
        results = _median_of_rounds(model, frames, rounds)
        bare, before, after, ultra = (results[kind] for kind in KINDS)
        overhead, speedup = after["ms"] / bare["ms"], ultra["ms"] / after["ms"]
        met = overhead <= TARGET_OVERHEAD and speedup >= TARGET_VS_ULTRALYTICS
        table.add_row(
            name,
            bare["backend"],
            f"{bare['ms']:.1f}",
            f"{before['ms']:.1f} ({before['ms'] / bare['ms']:.2f}x)",
            f"{after['ms']:.1f} ({overhead:.2f}x)",
            f"{before['fps']:.1f} -> {after['fps']:.1f}",
            f"{ultra['ms']:.1f}",
            f"{speedup:.2f}x faster",
            "met" if met else "NOT met",
            f"{after['rss_mb']:.0f}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; cells are their medians")
    parser.add_argument("--worker", choices=KINDS)
    parser.add_argument("--model", type=Path, action="append", help="a bundle or model file (repeat)")
    args = parser.parse_args(argv)
    if args.worker:
        model = args.model[0]
        if args.worker == "bare":
            result = _bare_worker(model, args.frames)
        elif args.worker == "ultralytics":
            result = _ultralytics_worker(model, args.frames)
        else:
            result = _agent_worker(model, args.frames, improved=args.worker == "agent-after")
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    models = [(m.name, m) for m in args.model] if args.model else None
    Console(width=220).print(run_table(args.frames, models, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
