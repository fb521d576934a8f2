"""Grouping features: k by elbow and silhouette, K-Means, a Gaussian mixture, t-SNE, the unknowns.

Features are L2-normalised (the study compared crops by cosine) and reduced by PCA to at most 64
dimensions before clustering: K-Means is unchanged in spirit, the mixture gets a covariance it can
estimate, and 100,000 x 2048 fits the time budget. Past `minibatch_after` crops K-Means is
MiniBatchKMeans; the k selection and the silhouette are fitted on samples, the PCA axes and the
final clustering on every crop (`make bench` measures it at 100,000).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

log = logging.getLogger(__name__)

UNKNOWN = -1


@dataclass
class KSelection:
    ks: list[int]
    inertias: list[float]
    silhouettes: list[float]
    elbow_k: int
    silhouette_k: int
    chosen_k: int
    silhouette_sample: int


@dataclass
class Clustering:
    k: int
    labels: np.ndarray  # K-Means cluster per crop, UNKNOWN for crops far from every cluster
    nearest: np.ndarray  # K-Means cluster per crop, unknowns included
    distances: np.ndarray  # to the nearest centroid
    probabilities: np.ndarray  # (N, k) Gaussian-mixture membership
    gmm_labels: np.ndarray
    rank: np.ndarray  # 0 = the crop nearest its centroid
    unknown_threshold: list[float] = field(default_factory=list)  # per cluster


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a random sample (all rows when there are no more than `size`)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def reduce(features: np.ndarray, max_dims: int = 64, seed: int = 0) -> np.ndarray:
    """L2-normalise, then PCA to at most `max_dims` (fewer when there are fewer crops). The axes are
    fitted on every crop: axes fitted on a sample keep more of that sample's own noise, which puts
    the sampled crops farther from their centroids (at 100,000 synthetic crops, five times as many
    of them went to the unknown queue)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    dims = min(max_dims, unit.shape[0] - 1, unit.shape[1])
    if dims < 2:
        return np.asarray(unit, dtype=np.float32)
    reduced = PCA(dims, random_state=seed, svd_solver="randomized").fit_transform(unit)
    return np.asarray(reduced, dtype=np.float32)


def centre_by_group(features: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per-illumination centring: each group (e.g. day, night) has its own mean removed and the
    overall mean put back, so what differs between the groups on average (IR greyness, colour cast)
    no longer decides the clusters."""
    out = features.astype(np.float32, copy=True)
    overall = features.mean(axis=0)
    for group in np.unique(groups):
        mask = groups == group
        if mask.sum() >= 2:
            out[mask] += overall - features[mask].mean(axis=0)
    return out


def _kmeans(k: int, n: int, seed: int, minibatch_after: int) -> KMeans | MiniBatchKMeans:
    if n > minibatch_after:
        return MiniBatchKMeans(k, random_state=seed, batch_size=4096, n_init=3)
    return KMeans(k, random_state=seed, n_init=4)


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The k farthest below the straight line from the first to the last point (kneedle)."""
    if len(ks) < 3:
        return ks[0]
    x = (np.array(ks) - ks[0]) / (ks[-1] - ks[0])
    y = np.array(inertias)
    y = (y - y.min()) / max(float(y.max() - y.min()), 1e-12)
    gap = (1 - x) - y  # the line from (0, 1) to (1, 0), minus the curve
    return int(ks[int(np.argmax(gap))])


def choose_k(
    x: np.ndarray,
    k_min: int = 2,
    k_max: int = 12,
    seed: int = 0,
    sample: int = 5000,
    minibatch_after: int = 10000,
    fit_sample: int = 20000,
) -> KSelection:
    """Elbow and silhouette over k_min..k_max, fitted on a sample of `fit_sample` crops (the curves'
    shape, which is all the choice reads, does not need every crop), silhouettes on `sample` of
    those."""
    n = x.shape[0]
    ks = [k for k in range(k_min, k_max + 1) if k < n]
    if not ks:
        raise ValueError(f"{n} crops are too few to cluster (need at least {k_min + 1})")
    x = x[_sample(n, fit_sample, seed)]
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    sample_idx = rng.choice(n, size=min(n, sample), replace=False)
    inertias, silhouettes = [], []
    for k in ks:
        model = _kmeans(k, n, seed, minibatch_after).fit(x)
        inertias.append(float(model.inertia_))
        labels = model.labels_[sample_idx]
        score = silhouette_score(x[sample_idx], labels) if len(set(labels)) > 1 else -1.0
        silhouettes.append(float(score))
        log.info("k=%d inertia %.1f silhouette %.3f", k, inertias[-1], silhouettes[-1])
    best = ks[int(np.argmax(silhouettes))]
    return KSelection(ks, inertias, silhouettes, elbow(ks, inertias), best, best, len(sample_idx))


def cluster(
    x: np.ndarray, k: int, seed: int = 0, minibatch_after: int = 10000, outlier_mads: float = 4.0
) -> Clustering:
    """K-Means with per-crop distances and ranks, a Gaussian mixture started from its centroids, and
    an unknown queue: crops farther from their centroid than the cluster's median distance plus
    `outlier_mads` median absolute deviations belong to no cluster."""
    n = x.shape[0]
    kmeans = _kmeans(k, n, seed, minibatch_after).fit(x)
    nearest = kmeans.predict(x)
    distances = np.linalg.norm(x - kmeans.cluster_centers_[nearest], axis=1)
    labels = nearest.copy()
    rank = np.zeros(n, dtype=np.int64)
    thresholds = []
    for c in range(k):
        members = np.flatnonzero(nearest == c)
        if members.size == 0:
            thresholds.append(float("inf"))
            continue
        d = distances[members]
        median = float(np.median(d))
        mad = float(np.median(np.abs(d - median))) or float(d.std()) or 1e-6
        limit = median + outlier_mads * mad
        thresholds.append(limit)
        labels[members[d > limit]] = UNKNOWN
        rank[members[np.argsort(d, kind="stable")]] = np.arange(members.size)
    gmm = GaussianMixture(
        k, covariance_type="diag", means_init=kmeans.cluster_centers_, random_state=seed, reg_covar=1e-4
    ).fit(x)
    probabilities = gmm.predict_proba(x)
    return Clustering(
        k, labels, nearest, distances, probabilities, probabilities.argmax(axis=1), rank, thresholds
    )


def tsne_map(
    x: np.ndarray, seed: int = 0, max_points: int = 20000, threads: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE (openTSNE, FFT-accelerated) of at most `max_points` crops (a random sample past
    that: the map is for eyes, and 100,000 points on 2 cores take minutes more); returns
    (indices embedded, coordinates)."""
    from openTSNE import TSNE

    idx = _sample(x.shape[0], max_points, seed)
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3.0)))
    small = len(idx) <= 2000
    embedding = TSNE(
        perplexity=perplexity,
        n_jobs=1 if small else threads,
        random_state=seed,
        neighbors="exact" if small else "auto",
        negative_gradient_method="bh" if small else "fft",
        verbose=False,
    ).fit(x[idx])
    return idx, np.asarray(embedding, dtype=np.float32)
