"""Learning-loop benchmark: ResNet-152 feature extraction and clustering 100,000 crops.

1. Crops per second of ResNet-152 features (random weights: speed does not depend on them) on
   PyTorch (the baseline) and ONNX Runtime, batch 1 and 16, with the server's thread count.
2. The server's own clustering job (`run_clustering`: L2 + PCA, k by elbow and sampled silhouette,
   K-Means/MiniBatch, Gaussian mixture, t-SNE of a sample, plots, grids, one member row per crop)
   on N synthetic 2048-d crops (default 100,000) with their rows in SQLite, from Parquet feature
   files as extraction writes them; wall time per stage, end to end.

Run: `python -m bench.learning [--crops 100000] [--only extraction|clustering]`. The machine's load
average is printed with the tables: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

THREADS = (1, 2)
CLUSTER_THREADS = 2
BATCHES = (1, 16)
CACHE = Path(".cache") / "bench"


def _crops(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 224, 224, 3), np.uint8)


def _crops_per_s(
    extract: Callable[[np.ndarray], np.ndarray], batch: int, seconds: float
) -> tuple[float, float]:
    """(crops/s wall, CPU seconds per crop): medians over repeated batches after a warm-up, for at
    least `seconds`. CPU time counts every thread's work, so it moves less with other processes'
    load than wall time does (spinning threads waiting for a core count as work, though)."""
    crops = _crops(batch)
    extract(crops)
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < 3 or time.perf_counter() - started < seconds:
        wall, cpu = time.perf_counter(), time.process_time()
        extract(crops)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return batch / statistics.median(walls), statistics.median(cpus) / batch


def extraction_table(seconds: float) -> Table:
    from trapline.server.clustering.extractors.resnet152 import OnnxResNet152, TorchResNet152

    rows: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
    with Progress() as progress:
        task = progress.add_task("ResNet-152", total=2 * len(THREADS) * len(BATCHES))
        for threads in THREADS:
            progress.update(task, description=f"ResNet-152 on PyTorch, {threads} thread(s)")
            torch_net = TorchResNet152(None, random_seed=0, threads=threads)
            for batch in BATCHES:
                rows.setdefault(("PyTorch", threads), {})[batch] = _crops_per_s(
                    torch_net.extract, batch, seconds
                )
                progress.advance(task)
            del torch_net
            progress.update(task, description=f"ResNet-152 on ONNX Runtime, {threads} thread(s)")
            onnx_net = OnnxResNet152(None, CACHE, random_seed=0, threads=threads)  # exported once, cached
            for batch in BATCHES:
                rows.setdefault(("ONNX Runtime", threads), {})[batch] = _crops_per_s(
                    onnx_net.extract, batch, seconds
                )
                progress.advance(task)
    table = Table(
        title="ResNet-152 features of 224x224 crops: crops/s (wall) and CPU seconds per crop;"
        " x = how many times PyTorch's speed with the same threads"
    )
    table.add_column("runtime")
    table.add_column("threads", justify="right")
    for batch in BATCHES:
        table.add_column(f"batch {batch} crops/s", justify="right")
        table.add_column(f"batch {batch} CPU s/crop", justify="right")
    for (name, threads), row in rows.items():
        base = rows[("PyTorch", threads)]
        cells = [name, str(threads)]
        for b in BATCHES:
            cells.append(f"{row[b][0]:.2f} ({row[b][0] / base[b][0]:.2f}x)")
            cells.append(f"{row[b][1]:.2f} ({base[b][1] / row[b][1]:.2f}x)")
        table.add_row(*cells)
    return table


def _synthetic_store(
    root: Path, crops: int, dims: int = 2048, groups: int = 10, chunk: int = 5000
) -> list[str]:
    """Feature files as extraction writes them: non-negative (post-ReLU, averaged) vectors around
    `groups` centres, a quarter of each group shifted as night pictures are; returns the keys."""
    from trapline.server.clustering.store import FeatureRow, FeatureStore

    rng = np.random.default_rng(0)
    centres = rng.gamma(0.6, 0.5, (groups, dims)).astype(np.float32)
    night_shift = rng.normal(0, 0.08, dims).astype(np.float32)
    store = FeatureStore(root, "resnet152")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    keys: list[str] = []
    for first in range(0, crops, chunk):
        n = min(chunk, crops - first)
        group = rng.integers(0, groups, n)
        night = rng.random(n) < 0.25
        features = centres[group] + rng.normal(0, 0.35, (n, dims)).astype(np.float32)
        features += night[:, None] * night_shift
        features = np.maximum(features, 0)
        rows = []
        for i in range(n):
            number, device = first + i, f"trap-{(first + i) % 40:02d}"
            rows.append(
                FeatureRow(key=f"d{number + 1}", detection_id=number + 1, media_id=None,
                           frame_id=f"{device}:{number:09d}", device_id=device,
                           captured_at=start + timedelta(minutes=number), night=bool(night[i]),
                           category="animal", conf=0.9, source_kind="frame", source_width=2048,
                           source_height=1536, low_resolution=False, failure=None)
            )  # fmt: skip
        store.write_chunk(f"chunk-bench-{first // chunk:05d}", rows, list(features))
        keys.extend(r.key for r in rows)
    return keys


def _synthetic_database(url: str, crops: int) -> None:
    """One frame and one box per crop (no pictures: the grids stay blank), inserted in bulk."""
    from sqlalchemy import insert

    from trapline.server.db import make_engine
    from trapline.server.migrate import upgrade
    from trapline.server.models import Detection, DetectionFrame, Device

    upgrade(url)
    engine = make_engine(url)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(insert(Device), [{"id": f"trap-{d:02d}", "state": "online"} for d in range(40)])
        for first in range(0, crops, 10000):
            numbers = range(first, min(first + 10000, crops))
            connection.execute(insert(DetectionFrame), [
                {"id": f"trap-{n % 40:02d}:{n:09d}", "device_id": f"trap-{n % 40:02d}",
                 "captured_at": start + timedelta(minutes=n), "processed_at": start, "received_at": start,
                 "sequence_id": f"trap-{n % 40:02d}:seq:{n:09d}", "frame_index": 0, "image_file": f"{n}.jpg",
                 "image_sha256": "0" * 64, "width": 2048, "height": 1536, "night": False,
                 "model_name": "bench", "model_version": "1", "inference_ms": 10.0, "detection_count": 1,
                 "max_conf": 0.9, "categories": ",animal,"} for n in numbers
            ])  # fmt: skip
            connection.execute(insert(Detection), [
                {"id": n + 1, "frame_id": f"trap-{n % 40:02d}:{n:09d}", "category": "animal", "conf": 0.9,
                 "x": 0.1, "y": 0.1, "w": 0.3, "h": 0.3} for n in numbers
            ])  # fmt: skip
    engine.dispose()


def _timed(stages: dict[str, list[float]], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = stages.setdefault(name, [0.0, 0.0])
            spent[0] += time.perf_counter() - wall
            spent[1] += time.process_time() - cpu

    return run


def clustering_table(crops: int, k_max: int) -> Table:
    from trapline.server.clustering import run as job
    from trapline.server.clustering.store import FeatureStore
    from trapline.server.core.config import ServerSettings
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.models import ClusteringRun

    stages: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name, Progress() as progress:
        tmp = Path(tmp_name)
        task = progress.add_task(f"writing {crops} synthetic feature rows", total=3)
        url = f"sqlite:///{tmp / 'bench.sqlite'}"
        settings = ServerSettings(database_url=url, data_dir=tmp / "data", clustering_k_max=k_max,
                                  clustering_threads=CLUSTER_THREADS)  # fmt: skip
        _synthetic_store(settings.learning_dir / "features", crops)
        progress.advance(task)
        progress.update(task, description="inserting frames and boxes")
        _synthetic_database(url, crops)
        progress.advance(task)
        progress.update(task, description=f"clustering {crops} crops (the server's job)")
        # every stage the job calls, timed where the job looks it up
        for name, label in (
            ("reduce", "L2 + PCA to 64 dimensions"),
            ("choose_k", f"k 2-{k_max}: elbow + silhouette (fitted on 20,000, silhouette on 5,000)"),
            ("cluster", "K-Means/MiniBatch + Gaussian mixture + unknowns (x2: chosen mode and 'none')"),
            ("suggest", "label suggestions"),
            ("tsne_map", "t-SNE (openTSNE, sample of 20,000)"),
            ("write_grids", "grids"),
        ):
            setattr(job, name, _timed(stages, label, getattr(job, name)))
        loading = _timed(stages, "reading the feature files", FeatureStore.load)
        FeatureStore.load = loading  # type: ignore[method-assign]
        engine = make_engine(url)
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            session.add(ClusteringRun(id="bench", created_at=datetime.now(UTC), extractor="resnet152",
                                      mode="centre", state="running", report={}, path=""))  # fmt: skip
        wall, cpu = time.perf_counter(), time.process_time()
        report = job.run_clustering(settings, sessions, "bench", {"extractor": "resnet152", "mode": "centre"})
        total = [time.perf_counter() - wall, time.process_time() - cpu]
        engine.dispose()
        progress.advance(task)
    # the job also clusters in the other illumination mode for the report's comparison
    stages["the rest: site and truth lookups, report, plots, member rows in the database"] = [
        total[0] - sum(v[0] for v in stages.values()),
        total[1] - sum(v[1] for v in stages.values()),
    ]
    table = Table(
        title=f"Clustering {crops:,} x 2048 features end to end (the server's job, {CLUSTER_THREADS} threads)"
    )
    table.add_column("stage")
    table.add_column("wall s", justify="right")
    table.add_column("share", justify="right")
    table.add_column("CPU s", justify="right")
    for name, (seconds, cpu_s) in stages.items():
        table.add_row(name, f"{seconds:.1f}", f"{seconds / total[0]:.0%}", f"{cpu_s:.1f}")
    table.add_row(
        f"end to end (k = {report['k']}, {report['unknown']} unknown)",
        f"{total[0]:.1f}",
        "100%",
        f"{total[1]:.1f}",
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=100_000, help="crops to cluster")
    parser.add_argument("--k-max", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per extraction configuration")
    parser.add_argument("--only", choices=("extraction", "clustering"))
    args = parser.parse_args(argv)
    console = Console(width=160)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    console.print(f"load average before (1/5/15 min): {load} on {os.cpu_count()} cores")
    if args.only in (None, "extraction"):
        console.print(extraction_table(args.seconds))
    if args.only in (None, "clustering"):
        console.print(clustering_table(args.crops, args.k_max))
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    console.print(f"load average after (1/5/15 min): {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
