"""A clustering run on real crops: k selection, K-Means, GMM, t-SNE, grids, agreement, suggestions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select

from tests.conftest import CAMTRAP
from tests.server.clustering.conftest import Fleet
from tests.server.clustering.test_extract import add_job
from trapline.server.clustering.cluster import UNKNOWN, choose_k, cluster, elbow
from trapline.server.clustering.extract import work_on
from trapline.server.clustering.quality import agreement, purity
from trapline.server.clustering.run import run_clustering_job
from trapline.server.db import transaction
from trapline.server.learning.labels import label_crops
from trapline.server.models import ClusteringRun, ClusterMember, Job


def test_k_selection_finds_separated_groups_and_flags_outliers() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(4, 8))
    groups = np.vstack([c + rng.normal(size=(40, 8)) for c in centres])
    selection = choose_k(groups.astype(np.float32), 2, 8)
    assert selection.silhouette_k == 4
    x = np.vstack([groups, centres[:2] + 12.0])  # two crops far from every group
    result = cluster(x.astype(np.float32), 4)
    assert set(result.labels[-2:]) == {UNKNOWN}  # far from every cluster
    assert (result.labels[:-2] != UNKNOWN).mean() > 0.95
    assert np.allclose(result.probabilities.sum(axis=1), 1.0)
    assert elbow([2, 3, 4, 5, 6], [100.0, 60.0, 10.0, 9.0, 8.0]) == 4


def test_purity_and_agreement_by_hand() -> None:
    truth = ["a", "a", "b", "b"]
    assert purity(truth, np.array([0, 0, 1, 1])) == 1.0
    assert purity(truth, np.array([0, 0, 0, 0])) == 0.5
    assert agreement(truth, np.array([1, 1, 0, 0]))["ari"] == 1.0


def test_clustering_run_on_real_crops(fleet: Fleet) -> None:
    fleet.settings.clustering_threads = 1
    work_on(fleet.settings, fleet.sessions, add_job(fleet, "extract"))
    with transaction(fleet.sessions) as session:  # a reviewer labelled a few crops
        by_species: dict[str, list[int]] = {}
        for det, name in fleet.species.items():
            by_species.setdefault(name, []).append(det)
        for name in ("jaguar", "burrowing owl"):
            label_crops(session, [f"d{d}" for d in by_species[name][:4]], name, "ada")
        now = datetime.now(UTC)
        session.add(Job(id="run-1", kind="cluster", state="queued", progress=0.0, created_at=now, updated_at=now,
                        params={"extractor": "yolo-backbone", "reference": [str(CAMTRAP)], "mode": "centre"}))  # fmt: skip
    run_clustering_job(fleet.settings, fleet.sessions, "run-1")
    out = fleet.settings.learning_dir / "runs" / "run-1"
    for name in ("elbow.png", "silhouette.png", "tsne.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > 1000, name
    report = json.loads((out / "report.json").read_text())
    assert report["crops"] == fleet.boxes and report["low_resolution"] > 0
    assert set(report["agreement"]) == {"none", "centre (chosen)"}
    chosen = report["agreement"]["centre (chosen)"]
    assert chosen["crops"] == fleet.boxes and 0 < chosen["purity"] <= 1 and -1 <= chosen["ari"] <= 1
    assert report["suggestions"]["classes"] == ["burrowing owl", "jaguar"]
    assert report["suggestions"]["cv_accuracy"] is not None
    for c in report["clusters"]:
        assert (out / c["grid"]).exists()
        assert sum(c["devices"].values()) == c["size"]
    with fleet.sessions() as session:
        run = session.get(ClusteringRun, "run-1")
        assert run is not None and run.state == "done" and run.k == report["k"]
        members = list(session.scalars(select(ClusterMember).where(ClusterMember.run_id == "run-1")))
    assert len(members) == fleet.boxes
    assert len({m.detection_id for m in members}) == fleet.boxes
    unlabelled = [m for m in members if m.suggestion is not None]
    assert len(unlabelled) == fleet.boxes - 8
    assert all(m.suggestion in ("jaguar", "burrowing owl") for m in unlabelled)
    # rank 0 is each cluster's crop nearest its centroid
    for c in {m.nearest_cluster for m in members}:
        ranked = sorted((m for m in members if m.nearest_cluster == c), key=lambda m: m.rank)
        assert [m.distance for m in ranked] == sorted(m.distance for m in ranked)


def test_report_markdown_names_extractor_and_both_modes(fleet: Fleet) -> None:
    fleet.settings.clustering_threads = 1
    work_on(fleet.settings, fleet.sessions, add_job(fleet, "extract"))
    now = datetime.now(UTC)
    with transaction(fleet.sessions) as session:
        session.add(Job(id="run-2", kind="cluster", state="queued", progress=0.0, created_at=now, updated_at=now,
                        params={"extractor": "yolo-backbone", "mode": "none", "k": 3,
                                "extractor_description": "pooled YOLOv8 backbone"}))  # fmt: skip
    run_clustering_job(fleet.settings, fleet.sessions, "run-2")
    text = (Path(fleet.settings.learning_dir) / "runs" / "run-2" / "report.md").read_text()
    assert "pooled YOLOv8 backbone" in text and "| none (chosen) |" in text and "| centre |" in text
    assert "k: 3" in text
