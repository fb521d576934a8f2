"""What a prepared dataset holds, as a table (CLI) and a PNG with one panel per question."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from trapline.training.records import ImageRecord


def tallies(records: list[ImageRecord], splits: dict[str, str]) -> dict[str, Counter[str]]:
    return {
        "empty vs non-empty": Counter("empty" if not r.boxes else "non-empty" for r in records),
        "site": Counter(r.site for r in records),
        "class (boxes)": Counter(b.category for r in records for b in r.boxes),
        "split": Counter(splits[r.file] for r in records),
        "day vs night": Counter("night" if r.night else "day" for r in records),
        "species": Counter(s for r in records for s in r.species) or Counter({"(none)": 0}),
    }


def plot(tables: dict[str, Counter[str]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, counts) in zip(axes.flat, tables.items(), strict=True):
        labels, values = zip(*counts.most_common(12), strict=True) if counts else ((), ())
        ax.barh(list(labels)[::-1], list(values)[::-1], color="#4a7c59")
        ax.set_title(title)
        for y, value in enumerate(list(values)[::-1]):
            ax.text(value, y, f" {value}", va="center", fontsize=8)
    fig.suptitle("Prepared camera-trap dataset")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
