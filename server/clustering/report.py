"""The clustering report a biologist reads: plots (PNG), crop grids (JPEG), report.md and .json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trapline.files import atomic_write
from trapline.server.clustering.cluster import UNKNOWN, KSelection

GRID_SIDE = 4  # crops per grid row and column
TILE = 112


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_k_selection(selection: KSelection, out: Path) -> tuple[Path, Path]:
    plt = _figure()
    elbow_png, silhouette_png = out / "elbow.png", out / "silhouette.png"
    for path, values, label, marked in (
        (elbow_png, selection.inertias, "inertia (within-cluster sum of squares)", selection.elbow_k),
        (silhouette_png, selection.silhouettes, f"silhouette (sample of {selection.silhouette_sample})",
         selection.silhouette_k),
    ):  # fmt: skip
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(selection.ks, values, "o-", color="#2f5d3a")
        ax.axvline(marked, color="#b5651d", linestyle="--", label=f"k = {marked}")
        ax.set_xlabel("k")
        ax.set_ylabel(label)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return elbow_png, silhouette_png


def plot_tsne(coords: np.ndarray, clusters: np.ndarray, out: Path, title: str) -> Path:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 6))
    known = clusters != UNKNOWN
    scatter = ax.scatter(coords[known, 0], coords[known, 1], c=clusters[known], cmap="tab20", s=8)
    ax.scatter(coords[~known, 0], coords[~known, 1], c="#999999", marker="x", s=10, label="unknown")
    ax.legend(*scatter.legend_elements(num=None), title="cluster", fontsize=6, loc="best")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    path = out / "tsne.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def crop_grid(crops: list[np.ndarray], path: Path) -> Path:
    """Up to 16 RGB crops as a 4x4 JPEG mosaic."""
    tiles = [cv2.resize(c, (TILE, TILE), interpolation=cv2.INTER_AREA) for c in crops[: GRID_SIDE**2]]
    while len(tiles) < GRID_SIDE**2:
        tiles.append(np.full((TILE, TILE, 3), 240, np.uint8))
    rows = [np.hstack(tiles[r * GRID_SIDE : (r + 1) * GRID_SIDE]) for r in range(GRID_SIDE)]
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise ValueError("could not encode the grid")
    atomic_write(path, data.tobytes())
    return path


def representatives(clusters: np.ndarray, rank: np.ndarray) -> dict[int, list[int]]:
    """Per cluster (and the unknown queue), the rows of its grid: the crops nearest its centroid."""
    chosen = {}
    for c in sorted(set(int(v) for v in clusters)):
        members = np.flatnonzero(clusters == c)
        chosen[c] = [int(i) for i in members[np.argsort(rank[members], kind="stable")][: GRID_SIDE**2]]
    return chosen


def write_grids(
    clusters: np.ndarray, rank: np.ndarray, cut: Callable[[int], np.ndarray | None], out: Path
) -> dict[int, str]:
    """Per cluster (and the unknown queue), its most representative crops."""
    grids = {}
    for c, ordered in representatives(clusters, rank).items():
        crops = [p for p in (cut(i) for i in ordered) if p is not None]
        name = "unknown.jpg" if c == UNKNOWN else f"cluster-{c:02d}.jpg"
        crop_grid(crops, out / name)
        grids[c] = name
    return grids


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def write_markdown(report: dict[str, Any], out: Path) -> Path:
    lines = [
        f"# Clustering run {report['run_id']}",
        "",
        f"- Extractor: {report['extractor']} (feature space `{report['space']}`)",
        f"- Crops: {report['crops']} clustered; {report['failures']} could not be cut (see report.json)",
        f"- Pictures: {report['sources']}; {report['low_resolution']} crops came from a picture smaller"
        " than the original frame (a thumbnail): their detail is lower",
        f"- Illumination mode: {report['mode']}",
        f"- k: {report['k']} (silhouette best {report['k_selection']['silhouette_k']}, elbow"
        f" {report['k_selection']['elbow_k']}, range {report['k_selection']['ks'][0]}-"
        f"{report['k_selection']['ks'][-1]}); unknown queue: {report['unknown']} crops",
        "",
        "![elbow](elbow.png) ![silhouette](silhouette.png) ![t-SNE](tsne.png)",
        "",
        "## Agreement with known species",
        "",
        f"Known species for {report['known_species_crops']} crops ({report['truth_sources']}).",
        "",
        "| mode | crops | species | purity | ARI | NMI |",
        "|---|---|---|---|---|---|",
    ]
    for mode, values in report["agreement"].items():
        lines.append(
            f"| {mode} | {values.get('crops', 0)} | {values.get('species', '-')}"
            f" | {values.get('purity', '-')} | {values.get('ari', '-')} | {values.get('nmi', '-')} |"
        )
    sug = report["suggestions"]
    accuracy = "n/a" if sug["cv_accuracy"] is None else f"{sug['cv_accuracy']:.2f}"
    lines += [
        "",
        f"Suggestions: logistic regression on {sug['trained_on']} reviewed crops, classes"
        f" {', '.join(sug['classes']) or '-'}; cross-validated accuracy {accuracy}"
        f" ({sug['cv_folds']} folds).",
        "",
        "## Clusters",
        "",
        "| cluster | crops | night | devices | sites | suggestion | grid |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report["clusters"]:
        devices = ", ".join(f"{k} {v}" for k, v in c["devices"].items())
        sites = ", ".join(f"{k} {v}" for k, v in c["sites"].items())
        suggestion = f"{c['suggestion']} ({c['suggestion_share']})" if c.get("suggestion") else "-"
        lines.append(
            f"| {c['cluster']} | {c['size']} | {_pct(c['night_share'])} | {devices} | {sites} | {suggestion}"
            f" | ![]({c['grid']}) |"
        )
    path = out / "report.md"
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    atomic_write(out / "report.json", json.dumps(report, indent=1, default=str).encode())
    return path
