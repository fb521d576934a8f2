"""What a prepared dataset holds, as a table (CLI) and a PNG with one panel per question."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from trapline.training.records import ImageRecord, record_key

SPLIT_ORDER = ("train", "val", "test")


def split_table(records: list[ImageRecord], splits: dict[str, str]) -> list[dict[str, object]]:
    """One row per split: what it holds (ambiguous photos count only in their own column)."""
    rows = []
    for name in SPLIT_ORDER:
        chosen = [r for r in records if splits[record_key(r)] == name]
        boxed = [r for r in chosen if not r.ambiguous]
        rows.append(
            {
                "split": name,
                "images": len(boxed),
                "boxes": sum(len(r.boxes) for r in boxed),
                "derived boxes": sum(b.derived for r in boxed for b in r.boxes),
                "empties": sum(r.empty for r in boxed),
                "verified empties": sum(r.empty and r.present == [] for r in boxed),
                "ambiguous (image-level only)": len(chosen) - len(boxed),
                "night": sum(r.night for r in boxed),
                "sequences": len({r.sequence for r in chosen}),
                "sites": len({r.site for r in chosen}),
                "site names": ", ".join(sorted({r.site for r in chosen})),
            }
        )
    return rows


def split_markdown(rows: list[dict[str, object]]) -> str:
    columns = [c for c in rows[0] if c != "site names"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    lines += ["", *(f"- {r['split']}: {r['site names']}" for r in rows)]
    return "\n".join(lines) + "\n"


def tallies(records: list[ImageRecord], splits: dict[str, str]) -> dict[str, Counter[str]]:
    return {
        "empty vs non-empty": Counter("empty" if not r.boxes else "non-empty" for r in records),
        "site": Counter(r.site for r in records),
        "class (boxes)": Counter(b.category for r in records for b in r.boxes),
        "split": Counter(splits[record_key(r)] for r in records),
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
