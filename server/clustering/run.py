"""A clustering run as a job: stored features -> clusters, suggestions, report, members in the DB.

The run clusters in the chosen illumination mode and also measures the other modes with the same k,
so the report shows purity / ARI / NMI with and without the mode side by side.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from trapline.server.clustering.cluster import UNKNOWN, centre_by_group, choose_k, cluster, reduce, tsne_map
from trapline.server.clustering.crops import CropError
from trapline.server.clustering.extract import ExtractionParams, feature_space
from trapline.server.clustering.items import PictureFinder, load_items
from trapline.server.clustering.quality import agreement, reference_species, suggest
from trapline.server.clustering.report import (
    plot_k_selection,
    plot_tsne,
    representatives,
    write_grids,
    write_markdown,
)
from trapline.server.clustering.store import FeatureStore, FeatureTable
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.learning.labels import current_labels, is_species
from trapline.server.models import ClusteringRun, ClusterMember, Deployment, DetectionFrame, Job

log = logging.getLogger(__name__)

MODES = ("none", "centre", "greyscale")


def _update_job(sessions: sessionmaker[Session], job_id: str, **values: Any) -> None:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is not None:
            for key, value in values.items():
                setattr(job, key, value)
            job.updated_at = datetime.now(UTC)


def _sites(session: Session, table: FeatureTable) -> list[str]:
    """Each crop's site: the deployment's location name at capture time, else the device id."""
    deployments: dict[str, list[Deployment]] = {}
    for dep in session.scalars(select(Deployment)):
        deployments.setdefault(dep.device_id, []).append(dep)
    sites = []
    for device, when in zip(table.meta["device_id"], table.meta["captured_at"], strict=True):
        name = device
        for dep in deployments.get(device, []):
            start = dep.start.replace(tzinfo=UTC) if dep.start.tzinfo is None else dep.start
            end = dep.end.replace(tzinfo=UTC) if dep.end and dep.end.tzinfo is None else dep.end
            at = when.replace(tzinfo=UTC) if when.tzinfo is None else when
            if start <= at and (end is None or at < end):
                name = dep.location_name or device
        sites.append(name)
    return sites


def _truth(
    session: Session, table: FeatureTable, reference_dirs: list[Path]
) -> tuple[dict[int, str], dict[int, str], str]:
    """(row -> species known, row -> any reviewed label, description of the sources)."""
    reviewed = current_labels(session, table.keys)
    reviewed_rows = {i: reviewed[k].label for i, k in enumerate(table.keys) if k in reviewed}
    truth = {i: lab for i, lab in reviewed_rows.items() if is_species(lab)}
    by_sha = reference_species(reference_dirs) if reference_dirs else {}
    from_reference = 0
    if by_sha:
        frame_ids = sorted(set(table.meta["frame_id"]))
        shas = dict(
            session.execute(
                select(DetectionFrame.id, DetectionFrame.image_sha256).where(DetectionFrame.id.in_(frame_ids))
            )
            .tuples()
            .all()
        )
        for i, frame_id in enumerate(table.meta["frame_id"]):
            species = by_sha.get(shas.get(frame_id, ""))
            if i not in truth and species:
                truth[i] = species
                from_reference += 1
    sources = f"{len(truth) - from_reference} from reviewers, {from_reference} from reference tables"
    return truth, reviewed_rows, sources


def _mode_features(
    mode: str, x_raw: np.ndarray, table: FeatureTable, grey: FeatureTable | None, seed: int
) -> np.ndarray | None:
    if mode == "none":
        return x_raw
    if mode == "centre":
        return centre_by_group(x_raw, np.array(table.meta["night"], dtype=bool))
    if grey is None:
        return None
    index = {k: i for i, k in enumerate(grey.keys)}
    if any(k not in index for k in table.keys):
        return None  # greyscale features not extracted for every crop yet
    return reduce(grey.features[[index[k] for k in table.keys]], seed=seed)


def run_clustering(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    run_id: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    # OpenMP threads spin while they wait: on a busy machine more threads than free cores make
    # small runs hundreds of times slower, so small runs use one
    with threadpool_limits(settings.clustering_threads):
        return _run_clustering(settings, sessions, run_id, params)


def _run_clustering(
    settings: ServerSettings,
    sessions: sessionmaker[Session],
    run_id: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    seed = int(params.get("seed", 0))
    mode = str(params.get("mode", settings.clustering_illumination))
    if mode not in MODES:
        raise ValueError(f"illumination mode must be one of {MODES}")
    extraction = ExtractionParams.from_job(params)
    space = str(params.get("space") or feature_space(settings, extraction))
    features_root = settings.learning_dir / "features"
    table = FeatureStore(features_root, space).load()
    if len(table) < 3:
        raise ValueError(f"feature space {space!r} holds {len(table)} crops: extract features first")
    grey_store = FeatureStore(features_root, space + "-grey")
    grey = grey_store.load() if grey_store.folder.exists() else None
    out = settings.learning_dir / "runs" / run_id
    out.mkdir(parents=True, exist_ok=True)
    x_raw = reduce(table.features, seed=seed)
    x = _mode_features(mode, x_raw, table, grey, seed)
    if x is None:
        raise ValueError(
            f"greyscale mode needs greyscale features of every crop ({space}-grey): extract them"
        )
    selection = choose_k(x, 2, min(settings.clustering_k_max, len(table) - 1), seed)
    k = int(params.get("k") or selection.chosen_k)
    result = cluster(x, k, seed)
    reference_dirs = [Path(p) for p in params.get("reference", [])]
    with sessions() as session:
        truth, reviewed, truth_sources = _truth(session, table, reference_dirs)
        sites = _sites(session, table)
    known = sorted(truth)
    agreements: dict[str, Any] = {}
    for other in MODES:
        xm = x if other == mode else _mode_features(other, x_raw, table, grey, seed)
        if xm is None:
            continue
        assigned = result.nearest if other == mode else cluster(xm, k, seed).nearest
        agreements[other + (" (chosen)" if other == mode else "")] = agreement(
            [truth[i] for i in known], assigned[known]
        )
    suggestions = suggest(x, reviewed, seed)
    idx, coords = tsne_map(x, seed, int(params.get("tsne_max", 20000)), settings.clustering_threads)
    plot_k_selection(selection, out)
    plot_tsne(coords, result.labels[idx], out, f"t-SNE of {len(idx)} crops, {space}, mode {mode}")

    shown = [table.keys[row] for rows in representatives(result.labels, result.rank).values() for row in rows]
    with sessions() as session:  # only the crops the grids show are cut
        items = {item.key: item for item in load_items(session, shown)}
        finder = PictureFinder(session, settings.media_dir, list(items.values()))

    def cut(row: int) -> np.ndarray | None:
        item = items.get(table.keys[row])
        try:
            return finder.cut(item).pixels if item else None
        except CropError:
            return None

    grids = write_grids(result.labels, result.rank, cut, out)
    night = np.array(table.meta["night"], dtype=bool)
    clusters_report = []
    for c in sorted(set(int(v) for v in result.labels)):
        members = [int(i) for i in np.flatnonzero(result.labels == c)]
        member_suggestions = Counter(s for s in (suggestions.labels[i] for i in members) if s)
        top = member_suggestions.most_common(1)
        clusters_report.append({
            "cluster": c, "size": len(members), "night_share": round(float(night[members].mean()), 3),
            "devices": dict(Counter(table.meta["device_id"][i] for i in members).most_common()),
            "sites": dict(Counter(sites[i] for i in members).most_common()),
            "known_species": dict(Counter(truth[i] for i in members if i in truth).most_common()),
            "suggestion": top[0][0] if top else None,
            "suggestion_share": f"{top[0][1]}/{sum(member_suggestions.values())}" if top else None,
            "grid": grids[c],
        })  # fmt: skip
    sources = Counter(table.meta["source_kind"])
    report: dict[str, Any] = {
        "run_id": run_id, "space": space, "extractor": params.get("extractor_description") or space,
        "crops": len(table), "failures": len(table.failures), "failed_crops": table.failures,
        "sources": ", ".join(f"{v} from {k}" for k, v in sources.most_common()),
        "low_resolution": int(sum(bool(v) for v in table.meta["low_resolution"])),
        "mode": mode, "k": k, "unknown": int((result.labels == UNKNOWN).sum()),
        "k_selection": {"ks": selection.ks, "inertia": selection.inertias,
                        "silhouette": selection.silhouettes, "elbow_k": selection.elbow_k,
                        "silhouette_k": selection.silhouette_k,
                        "silhouette_sample": selection.silhouette_sample},
        "known_species_crops": len(known), "truth_sources": truth_sources, "agreement": agreements,
        "suggestions": {"cv_accuracy": suggestions.cv_accuracy, "cv_folds": suggestions.cv_folds,
                        "classes": suggestions.classes, "trained_on": suggestions.trained_on},
        "tsne_points": len(idx), "clusters": clusters_report,
    }  # fmt: skip
    write_markdown(report, out)
    with transaction(sessions) as session:
        session.execute(delete(ClusterMember).where(ClusterMember.run_id == run_id))
        run = session.get(ClusteringRun, run_id)
        if run is None:
            raise LookupError(f"no clustering run {run_id}")
        best = result.probabilities.max(axis=1)
        member_rows: list[dict[str, Any]] = [
            dict(run_id=run_id, detection_id=int(key[1:]) if key[0] == "d" else None,
                 media_id=int(key[1:]) if key[0] == "m" else None, cluster=int(result.labels[i]),
                 nearest_cluster=int(result.nearest[i]), probability=round(float(best[i]), 4),
                 distance=round(float(result.distances[i]), 4), rank=int(result.rank[i]),
                 source_kind=str(table.meta["source_kind"][i] or "?"),
                 suggestion=suggestions.labels[i], suggestion_probability=suggestions.probabilities[i])
            for i, key in enumerate(table.keys)
        ]  # fmt: skip
        for start in range(0, len(member_rows), 10000):  # in bulk: one ORM object per crop is slow at 100k
            session.execute(insert(ClusterMember), member_rows[start : start + 10000])
        run.state, run.crops, run.k, run.path = "done", len(table), k, str(out)
        run.report = {key: value for key, value in report.items() if key != "failed_crops"}
    log.info("clustering run %s: %d crops, k=%d, %d unknown", run_id, len(table), k, report["unknown"])
    return report


def run_clustering_job(settings: ServerSettings, sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        params = dict(job.params)
    mode = str(params.get("mode", settings.clustering_illumination))
    with transaction(sessions) as session:
        if session.get(ClusteringRun, job_id) is None:
            session.add(ClusteringRun(
                id=job_id, job_id=job_id, created_at=datetime.now(UTC), mode=mode, state="running",
                extractor=str(params.get("extractor", settings.feature_extractor)), report={}, path="",
            ))  # fmt: skip
    _update_job(sessions, job_id, state="running", progress=0.1)
    try:
        report = run_clustering(settings, sessions, job_id, params)
    except Exception:
        with transaction(sessions) as session:
            run = session.get(ClusteringRun, job_id)
            if run is not None:
                run.state = "failed"
        raise
    _update_job(
        sessions,
        job_id,
        state="done",
        progress=1.0,
        result_path=str(settings.learning_dir / "runs" / job_id / "report.md"),
        message=f"{report['crops']} crops in {report['k']} clusters, {report['unknown']} unknown",
    )
