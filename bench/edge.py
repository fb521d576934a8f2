"""Edge benchmark: the agent's pipeline per backend and model against Ultralytics' own predict.

For each model, in separate processes (so peak RSS is each one's own):
- agent: decode -> detect -> bursts -> spool (the real `Agent.process`, SQLite fsync included),
  median end-to-end ms per frame and the backend's bare inference ms;
- ultralytics: `YOLO(model).predict(path)` on the same files, the baseline.
Run: `python -m bench.edge [--frames N]`.
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
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from trapline.edge.config import PACKAGED_MODELS as PACKAGED
from trapline.edge.config import PACKAGED_SAMPLES as SAMPLES

# the development data beside the checkout (`make bench` runs from the repository's root)
SHARED_WEIGHTS = Path(os.environ.get("TRAPLINE_SHARED", "../shared")) / "weights"


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a worker would report the
    # peak of the (torch-laden) parent that started it
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _agent_worker(model: Path, frames: int) -> dict[str, Any]:
    from trapline.edge.agent import Agent
    from trapline.edge.config import AgentConfig
    from trapline.edge.sources.replay import ReplaySource, ReplaySourceConfig

    with tempfile.TemporaryDirectory() as tmp:
        source_cfg = {"type": "replay", "files": [str(SAMPLES)], "count": frames}
        config = AgentConfig.model_validate(
            {
                "device_id": "bench",
                "source": source_cfg,
                "model": {"path": str(model), "threads": 2, "fallback_to_packaged": False},
                "spool": {"path": f"{tmp}/spool.sqlite"},
                "quarantine_dir": f"{tmp}/q",
            }
        )
        agent = Agent(config)  # the MQTT link is built but not started: results stay spooled
        source = ReplaySource(ReplaySourceConfig.model_validate(source_cfg))
        import threading

        from trapline.edge.imaging import decode_image

        inference: list[float] = []
        decode: list[float] = []
        for frame in source.frames(threading.Event(), lambda _k: False):
            if frame is None or frame.data is None:
                continue
            agent.process(frame)
            inference.append(agent.last_inference_ms)
            started = time.perf_counter()
            decode_image(frame.data, config.max_image_pixels)
            decode.append((time.perf_counter() - started) * 1000)
        return {
            "e2e_ms": statistics.median(agent.frame_ms),
            "inference_ms": statistics.median(inference),
            "decode_ms": statistics.median(decode),
            "fps": 1000 / statistics.mean(agent.frame_ms),
            "rss_mb": _peak_rss_mb(),
            "backend": agent.detector.backend.key,
        }


def _ultralytics_worker(model: Path, frames: int) -> dict[str, Any]:
    from ultralytics import YOLO

    if model.is_dir():  # a bundle: Ultralytics runs the model file inside
        model = model / "model.onnx"
    files = sorted(SAMPLES.glob("*.jpg"))
    yolo = YOLO(str(model), task="detect")
    yolo.predict(str(files[0]), verbose=False)  # warm-up, as the agent does on load
    timings = []
    for index in range(frames):
        started = time.perf_counter()
        yolo.predict(str(files[index % len(files)]), verbose=False, conf=0.25)
        timings.append((time.perf_counter() - started) * 1000)
    return {"e2e_ms": statistics.median(timings), "rss_mb": _peak_rss_mb()}


def _run_worker(kind: str, model: Path, frames: int) -> dict[str, Any]:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.edge",
            "--worker",
            kind,
            "--model",
            str(model),
            "--frames",
            str(frames),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _fp32_onnx(workdir: Path) -> Path | None:
    weights = SHARED_WEIGHTS / "yolov8n-coco.pt"
    if not weights.exists():
        return None
    from ultralytics import YOLO

    local = workdir / "yolov8n-coco.pt"
    local.write_bytes(weights.read_bytes())
    return Path(YOLO(str(local)).export(format="onnx", imgsz=640, simplify=True, verbose=False))


def run_table(frames: int) -> Table:
    with tempfile.TemporaryDirectory() as tmp:
        models: list[tuple[str, Path]] = [
            ("trapline-nano ONNX INT8 QDQ 416 (default)", PACKAGED / "trapline-nano"),
            ("COCO ONNX INT8 dynamic", PACKAGED / "yolov8n-coco-int8-dynamic.onnx"),
            ("COCO TFLite INT8", PACKAGED / "yolov8n-coco-int8.tflite"),
        ]
        fp32 = _fp32_onnx(Path(tmp))
        if fp32 is not None:
            models.insert(0, ("ONNX FP32", fp32))
        if (SHARED_WEIGHTS / "yolov8n-coco-int8-io.tflite").exists():
            models.append(("TFLite INT8, int8 I/O", SHARED_WEIGHTS / "yolov8n-coco-int8-io.tflite"))
        table = Table(title=f"Edge pipeline, {frames} frames of the sample photos (640 px, 2 threads)")
        for column in (
            "model",
            "backend",
            "agent e2e ms",
            "bare inference ms",
            "overhead x",
            "JPEG decode ms",
            "overhead x excl. decode",
            "ultralytics ms",
            "agent vs ultralytics",
            "agent RSS MB",
            "ultralytics RSS MB",
        ):
            table.add_column(column, justify="right" if "ms" in column or "x" in column else "left")
        for name, model in track(models, description="benchmarking models"):
            agent = _run_worker("agent", model, frames)
            ultra = _run_worker("ultralytics", model, frames)
            table.add_row(
                name,
                agent["backend"],
                f"{agent['e2e_ms']:.1f}",
                f"{agent['inference_ms']:.1f}",
                f"{agent['e2e_ms'] / agent['inference_ms']:.2f}",
                f"{agent['decode_ms']:.1f}",
                f"{(agent['e2e_ms'] - agent['decode_ms']) / agent['inference_ms']:.2f}",
                f"{ultra['e2e_ms']:.1f}",
                f"{ultra['e2e_ms'] / agent['e2e_ms']:.2f}x faster",
                f"{agent['rss_mb']:.0f}",
                f"{ultra['rss_mb']:.0f}",
            )
        return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--worker", choices=["agent", "ultralytics"])
    parser.add_argument("--model", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        worker = _agent_worker if args.worker == "agent" else _ultralytics_worker
        sys.stdout.write(json.dumps(worker(args.model, args.frames)) + "\n")
        return 0
    Console(width=200).print(run_table(args.frames))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
