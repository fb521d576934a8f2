"""How good the clusters are against known species, and species suggestions for the rest.

Known species come from reviewers' labels and, where the server holds photos of the development
sets, from their reference tables (matched by the photo's SHA-256): camtrap-dev `species.csv` and
camtrap-train `image_labels.csv`.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

# names that are not a species
NOT_SPECIES = {"empty", "species", "human", "vehicle", "person", "not an animal", "unsure"}


def purity(truth: list[str], clusters: np.ndarray) -> float:
    """Share of crops whose cluster's most common species is their own."""
    total = 0
    for c in np.unique(clusters):
        members = [truth[i] for i in np.flatnonzero(clusters == c)]
        total += Counter(members).most_common(1)[0][1]
    return total / max(len(truth), 1)


def agreement(truth: list[str], clusters: np.ndarray) -> dict[str, float | int]:
    """Purity, adjusted Rand index and NMI of `clusters` against `truth` (same order)."""
    if len(truth) < 2:
        return {"crops": len(truth)}
    return {
        "crops": len(truth),
        "species": len(set(truth)),
        "purity": round(purity(truth, clusters), 4),
        "ari": round(float(adjusted_rand_score(truth, clusters)), 4),
        "nmi": round(float(normalized_mutual_info_score(truth, clusters)), 4),
    }


def reference_species(folders: list[Path]) -> dict[str, str]:
    """Photo SHA-256 -> species from the development sets' tables in `folders` (each holding
    metadata.jsonl and species.csv or image_labels.csv). One species per photo only: photos with
    two species are left out."""
    by_sha: dict[str, str] = {}
    for folder in folders:
        meta = folder / "metadata.jsonl"
        if not meta.exists():
            continue
        sha_of = {}
        for line in meta.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                sha_of[row["file"]] = row.get("sha256")
        names: dict[str, set[str]] = {}
        for table, column, prefix in (("species.csv", "species", ""), ("image_labels.csv", "label", "")):
            path = folder / table
            if path.exists():
                with path.open(newline="") as handle:
                    for row in csv.DictReader(handle):
                        names.setdefault(prefix + row["file"], set()).add(row[column].strip().lower())
        for file, species in names.items():
            kept = species - NOT_SPECIES
            sha = sha_of.get(file)
            if sha and len(kept) == 1:
                by_sha[sha] = kept.pop()
    return by_sha


@dataclass
class Suggestions:
    labels: list[str | None]  # per crop (None where the crop is labelled or no model exists)
    probabilities: list[float | None]
    cv_accuracy: float | None
    cv_folds: int
    classes: list[str]
    trained_on: int


def suggest(x: np.ndarray, labelled: dict[int, str], seed: int = 0) -> Suggestions:
    """Logistic regression on the features of reviewed crops (`labelled`: row -> label) suggests a
    label for every other crop, with its cross-validated accuracy. Needs two labels with two crops
    each; otherwise no suggestions."""
    n = x.shape[0]
    empty = Suggestions([None] * n, [None] * n, None, 0, [], len(labelled))
    counts = Counter(labelled.values())
    usable = {i: lab for i, lab in labelled.items() if counts[lab] >= 2}
    classes = sorted(set(usable.values()))
    if len(classes) < 2:
        return empty
    rows = np.array(sorted(usable))
    y = np.array([usable[i] for i in rows])
    model = LogisticRegression(max_iter=2000, C=1.0)
    folds = min(5, min(Counter(y).values()))
    accuracy = None
    if folds >= 2:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        accuracy = float(np.mean(cross_val_score(model, x[rows], y, cv=splitter)))
    model.fit(x[rows], y)
    probabilities = model.predict_proba(x)
    best = probabilities.argmax(axis=1)
    labels: list[str | None] = [str(model.classes_[b]) for b in best]
    probs: list[float | None] = [round(float(probabilities[i, b]), 4) for i, b in enumerate(best)]
    for i in labelled:
        labels[i], probs[i] = None, None
    return Suggestions(labels, probs, accuracy, folds, classes, len(rows))
