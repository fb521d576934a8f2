"""`trapline train evaluate`: one evaluator for every model format, on a prepared dataset's split.

Every YOLOv8 model - a PyTorch checkpoint, ONNX FP32/INT8, TFLite/LiteRT FP32/INT8 - runs through
the trap's own `edge.detector.Detector` (a `.pt` behind `training.torch_backend.TorchBackend`), so
all of them see the same letterboxed tensors and the same decode and NMS, and what is scored is what
the trap runs. The teacher (MegadetectorLite, YOLOX) runs with its own documented pre-processing.

Truth comes from the dataset's records.jsonl: image-level labels made by people or file names;
boxes made by people, by MegaDetector (model output) or derived from a teacher (model output).
Box metrics are reported twice: over every photo with complete boxes, and over the photos whose
boxes (or verified emptiness) no teacher made - the only fair box comparison with the teacher.
Thresholds: per class, chosen on the val split for a stated box precision (metrics.choose_thresholds),
or the model's own (its manifest), or one fixed value.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from trapline.contracts import CATEGORIES
from trapline.edge.model_info import COCO_CATEGORIES
from trapline.training.boxes import yolo_to_md
from trapline.training.metrics import (
    Box,
    ImageResult,
    box_summary,
    choose_thresholds,
    coco_matches,
    confusion_matrix,
    coverage_curve,
    image_summary,
)
from trapline.training.records import ImageRecord, LabelBox, read_jsonl, record_key

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], list[Box]]
ModelKind = Literal["auto", "yolov8", "yolox"]
LOW_CONF = 0.001  # keep nearly everything: AP needs the whole precision-recall curve
DEFAULT_TARGET_PRECISION = 0.9


@dataclass
class LoadedModel:
    name: str
    predict: Predictor
    classes: list[str]
    own_thresholds: dict[str, float]


def _xyxy(md: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = md
    return (x, y, x + w, y + h)


def load_model(
    model: Path,
    kind: ModelKind = "auto",
    imgsz: int | None = None,
    threads: int = 2,
    keyring: Path | None = None,
) -> LoadedModel:
    """A predictor (BGR photo -> boxes at a low confidence floor) for any model file, or a signed
    bundle verified with `keyring` (default: the keys packaged with the agent)."""
    if kind == "yolox" or (kind == "auto" and "yolox" in model.name.lower()):
        from trapline.training.yolox import YoloxDetector

        yolox = YoloxDetector(model, threads, LOW_CONF)
        return LoadedModel(
            model.name,
            lambda image: [Box(b.category, _xyxy(b.bbox), b.conf) for b in yolox.detect(image)],
            ["animal"],
            {},
        )
    from trapline.edge.agent import resolve_model
    from trapline.edge.config import PACKAGED_KEYRING
    from trapline.edge.detector import Detector
    from trapline.model_source import ModelSource, is_bundle

    loaded = None
    source: Path | ModelSource = model
    if model.suffix == ".pt":
        from trapline.training.torch_backend import TorchBackend

        loaded = TorchBackend(model, threads, imgsz or _checkpoint_imgsz(model))
    elif model.is_dir() or is_bundle(model.parent):
        # a signed bundle (the packaged one, a release): verified as a trap would, so its
        # manifest's classes and thresholds are the ones used
        source = resolve_model(model, keyring or PACKAGED_KEYRING)
    detector = Detector(source, threads=threads, conf_threshold=LOW_CONF, loaded=loaded)
    own = detector.info.thresholds  # the model's own (manifest), not the low floor used here
    own_by_category: dict[str, float] = {}
    for name, category in zip(detector.info.class_names, detector.info.categories, strict=True):
        if category is not None:
            own_by_category[category] = min(own_by_category.get(category, 1.0), own.for_class(name, category))

    def predict(image: np.ndarray) -> list[Box]:
        return [Box(d.category, _xyxy(d.bbox), d.conf) for d in detector.detect(image).detections]

    return LoadedModel(model.name, predict, list(detector.info.category_names), own_by_category)


def _checkpoint_imgsz(weights: Path) -> int:
    import torch

    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    size = (checkpoint.get("train_args") or {}).get("imgsz", 640)
    return int(size[0] if isinstance(size, list | tuple) else size)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    records: list[ImageRecord]
    splits: dict[str, str]
    image_roots: dict[str, Path]

    @classmethod
    def load(cls, path: Path) -> Dataset:
        """A folder written by `trapline train prepare` (or its data.yaml), or any Ultralytics
        dataset's data.yaml (`from_yolo`)."""
        root = path.parent if path.suffix in (".yaml", ".yml") else path
        if not (root / "sources.json").is_file():
            return cls.from_yolo(path if path.suffix in (".yaml", ".yml") else root / "data.yaml")
        names = yaml.safe_load((root / "data.yaml").read_text())["names"]
        classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        if len(classes) == 80 and classes[0] == "person":
            # label space "coco": trained in COCO's classes, scored in the categories they map to
            # (the records' boxes carry those; the model's detections are published as those)
            mapped = {COCO_CATEGORIES.get(name) for name in classes}
            classes = [c for c in CATEGORIES if c in mapped]
        roots = {k: Path(v) for k, v in json.loads((root / "sources.json").read_text()).items()}
        return cls(
            root,
            classes,
            read_jsonl(root / "records.jsonl"),
            json.loads((root / "splits.json").read_text()),
            roots,
        )

    @classmethod
    def from_yolo(cls, data_yaml: Path) -> Dataset:
        """A plain Ultralytics dataset (images/<split>, labels/<split>; the server's retraining
        builds one): every photo has complete boxes made by people, its image-level label is the
        classes of its boxes ([] = empty), and all photos belong to one site."""
        from PIL import Image

        data = yaml.safe_load(data_yaml.read_text())
        root = Path(data.get("path") or data_yaml.parent)
        root = root if root.is_absolute() else data_yaml.parent / root
        names = data["names"]
        classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        records, splits = [], {}
        for split in ("train", "val", "test"):
            if not data.get(split):
                continue
            folder = root / data[split]
            for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
                label = Path(str(image.parent).replace("images", "labels")) / f"{image.stem}.txt"
                lines = label.read_text().splitlines() if label.is_file() else []
                boxes = []
                for line in filter(str.strip, lines):
                    cls_id, cx, cy, w, h = line.split()[:5]
                    bbox = yolo_to_md((float(cx), float(cy), float(w), float(h)))
                    boxes.append(LabelBox(category=classes[int(cls_id)], bbox=bbox, source="yolo labels"))
                with Image.open(image) as opened:
                    width, height = opened.size
                record = ImageRecord(
                    file=str(image.relative_to(root)), sha256="", width=width, height=height, site="all",
                    night=False, boxes=boxes, labelled=True, present=sorted({b.category for b in boxes}),
                    present_source="labels",
                )  # fmt: skip
                records.append(record)
                splits[record_key(record)] = split
        return cls(root, classes, records, splits, {"": root})

    def split(self, name: str) -> list[ImageRecord]:
        return [r for r in self.records if self.splits.get(record_key(r)) == name]

    def path(self, record: ImageRecord) -> Path:
        return self.image_roots[record.source] / record.file

    def teacher_threshold(self, model: Path) -> float | None:
        chosen = self.root / "teacher_thresholds.json"
        if not chosen.is_file():
            return None
        for entry in json.loads(chosen.read_text())["chosen"]:
            if entry["teacher"] == model.stem:
                return float(entry["threshold"])
        return None


def _result(record: ImageRecord) -> ImageResult:
    independent = not record.teacher_only and not any(b.derived for b in record.boxes)
    return ImageResult(
        key=record_key(record),
        site=record.site,
        width=record.width,
        height=record.height,
        truth=None if record.ambiguous else [Box(b.category, _xyxy(b.bbox)) for b in record.boxes],
        independent=independent,
        present=record.present,
    )


def predict_split(
    model: LoadedModel,
    dataset: Dataset,
    split: str,
    keep: Callable[[ImageRecord], bool] | None = None,
) -> list[ImageResult]:
    records = [r for r in dataset.split(split) if keep is None or keep(r)]
    results = []
    for record in tqdm(records, desc=f"{model.name} on {split}", unit="img"):
        image = cv2.imread(str(dataset.path(record)))
        if image is None:
            raise ValueError(f"cannot read {dataset.path(record)}")
        result = _result(record)
        result.predicted = model.predict(image)
        results.append(result)
    return results


@dataclass
class ModelReport:
    model: str
    role: str
    split: str
    thresholds: dict[str, float]
    thresholds_how: dict[str, str]
    image: dict[str, Any]
    boxes: dict[str, Any]
    boxes_independent: dict[str, Any]
    per_site: dict[str, dict[str, Any]] = field(default_factory=dict)
    coverage: list[dict[str, float]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # the confusion matrix's order
    confusion: list[list[int]] = field(default_factory=list)  # rows true, columns predicted (+ background)


def score(
    results: list[ImageResult], classes: list[str], thresholds: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """Image-level and box metrics overall, on independent truth, and per site."""
    full = {c: thresholds.get(c, 1.1) for c in classes}
    overall = box_summary(coco_matches(results, classes), full)
    independent = box_summary(coco_matches([r for r in results if r.independent], classes), full)
    sites: dict[str, list[ImageResult]] = defaultdict(list)
    for result in results:
        sites[result.site].append(result)
    per_site = {
        site: {
            "image": image_summary(members, full),
            "boxes": box_summary(coco_matches(members, classes), full),
        }
        for site, members in sorted(sites.items())
    }
    return image_summary(results, full), overall, independent, per_site


def choose_model_thresholds(
    loaded: LoadedModel,
    dataset: Dataset,
    model: Path,
    mode: Literal["val", "own", "teacher"] | float,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> tuple[dict[str, float], dict[str, str], list[ImageResult] | None]:
    """Per-class thresholds, how each was chosen, and the val predictions when they were made."""
    classes = [c for c in dataset.classes if c in loaded.classes]
    if mode == "teacher":
        teacher = dataset.teacher_threshold(model)
        if teacher is None:
            raise ValueError(f"{dataset.root} has no teacher threshold for {model.stem}")
        how = "teacher threshold chosen on train+val human labels (prepare)"
        return dict.fromkeys(classes, teacher), dict.fromkeys(classes, how), None
    if isinstance(mode, float):
        return dict.fromkeys(classes, mode), dict.fromkeys(classes, "fixed"), None
    if mode == "own":
        own = {c: loaded.own_thresholds.get(c, 0.25) for c in classes}
        return own, dict.fromkeys(classes, "the model's own (manifest)"), None
    val = predict_split(loaded, dataset, "val")
    chosen, reasons = choose_thresholds(coco_matches(val, classes), classes, target_precision, 0.25)
    return chosen, reasons, val


def evaluate(
    model: Path,
    dataset_path: Path,
    split: str = "test",
    thresholds: Literal["val", "own", "teacher"] | float = "val",
    target_precision: float = DEFAULT_TARGET_PRECISION,
    kind: ModelKind = "auto",
    imgsz: int | None = None,
    role: str = "model",
    keyring: Path | None = None,
) -> ModelReport:
    """Score `model` on `split`. Thresholds: chosen on val (`"val"`), the model's own (manifest),
    the one `prepare` chose for this model as a teacher (`"teacher"`), or one fixed value."""
    dataset = Dataset.load(dataset_path)
    loaded = load_model(model, kind, imgsz, keyring=keyring)
    classes = [c for c in dataset.classes if c in loaded.classes]
    chosen, how, val = choose_model_thresholds(loaded, dataset, model, thresholds, target_precision)
    results = val if split == "val" and val is not None else predict_split(loaded, dataset, split)
    image, boxes, independent, per_site = score(results, classes, chosen)
    confusion = confusion_matrix(results, classes, chosen)
    return ModelReport(
        loaded.name, role, split, chosen, how, image, boxes, independent, per_site, coverage_curve(results),
        classes, confusion,
    )  # fmt: skip


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """A model report's (`asdict(ModelReport)`) few numbers, flat: what the server's model list and
    dashboard show and its retraining gate reads (server.learning.gate), plus the curves and the
    confusion matrix the dashboard charts."""
    image, boxes = report["image"], report["boxes"]
    animal = boxes["per_class"].get("animal", {})
    thresholds = report.get("thresholds", {})
    how = " ".join(report.get("thresholds_how", {}).values())
    target = float(how.split("precision >=")[1].split()[0]) if "precision >=" in how else None
    return {
        "split": report["split"],
        "images": image.get("images"),
        "map50": boxes["map50"],
        "map50_95": boxes["map50_95"],
        "classes_present": boxes["classes_present"],
        "precision": animal.get("precision50"),
        "recall": boxes["box_recall50"],
        "f1": animal.get("f1"),
        "image_accuracy": image.get("accuracy"),
        "empty_fp_rate": image.get("empty_fp_rate"),
        "empty_false_positive_rate": image.get("empty_fp_rate"),
        "animal_recall": image.get("animal_recall"),
        "per_class": boxes["per_class"],
        "pr_curves": boxes.get("pr_curves", {}),
        "classes": report.get("classes", []),
        "confusion": report.get("confusion", []),
        "conf_threshold": thresholds.get("animal"),
        "threshold_curve": [
            {"confidence": p["confidence"], "handled": p["coverage"], "accuracy": p["accuracy"]}
            for p in report.get("coverage", [])
        ],
        "threshold_for_precision": {"target_precision": target, "threshold": thresholds.get("animal")},
    }


# ---- report -------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def markdown(reports: list[ModelReport], title: str, notes: list[str] | None = None) -> str:
    """Side-by-side Markdown: image level, boxes (all, independent), per class, per site."""
    heads = [r.role for r in reports]
    first = reports[0]
    lines = [f"# {title}", "", *(notes or []), ""]
    lines += [f"- {r.role}: `{r.model}`" for r in reports] + [""]
    lines += [
        f"Split `{first.split}`: {first.image.get('images', 0)} photos with an image-level label"
        f" (people or file names); {first.boxes['boxes']} boxes on photos with complete boxes.",
        "",
    ]
    rows = []
    for label, key in (
        ("animal/no-animal accuracy", "accuracy"),
        ("false-positive rate on empty photos (any box)", "empty_fp_rate"),
        ("animal recall (photos)", "animal_recall"),
    ):
        rows.append([label, *(_fmt(r.image.get(key)) for r in reports)])
    counts = [f"{r.image.get('empty_images')} / {r.image.get('animal_images')}" for r in reports]
    rows.append(["empty photos / photos with an animal", *counts])
    for label, part in (("all boxes", "boxes"), ("boxes no teacher made", "boxes_independent")):
        rows.append([f"box recall@0.5 ({label})", *(_fmt(getattr(r, part)["box_recall50"]) for r in reports)])
        rows.append(
            [f"mAP50 ({label}; classes present)", *(_fmt(getattr(r, part)["map50"]) for r in reports)]
        )
        rows.append([f"mAP50-95 ({label})", *(_fmt(getattr(r, part)["map50_95"]) for r in reports)])
    rows.append(
        ["thresholds", *(", ".join(f"{c} {v:.2f}" for c, v in r.thresholds.items()) for r in reports)]
    )
    lines += ["## Overall", "", *_table(["metric", *heads], rows), ""]
    classes = sorted({c for r in reports for c in r.boxes["per_class"]})
    lines += ["## Per class (only classes with instances in the split)", ""]
    header = ["class", "instances"] + [f"{h} {m}" for h in heads for m in ("AP50", "AP50-95", "recall@0.5")]
    class_rows = []
    for name in classes:
        cells = [name, str(first.boxes["per_class"].get(name, {}).get("instances", 0))]
        for r in reports:
            values = r.boxes["per_class"].get(name, {})
            cells += [_fmt(values.get("ap50")), _fmt(values.get("ap50_95")), _fmt(values.get("recall50"))]
        class_rows.append(cells)
    lines += [*_table(header, class_rows), ""]
    lines += ["## Per site", ""]
    header = ["site", "photos (empty)"] + [
        f"{h} {m}" for h in heads for m in ("acc", "empty FP", "recall", "box recall")
    ]
    site_rows = []
    for site in first.per_site:
        base = first.per_site[site]["image"]
        cells = [site, f"{base.get('images', 0)} ({base.get('empty_images', 0)})"]
        for r in reports:
            entry = r.per_site.get(site, {})
            image, boxes = entry.get("image", {}), entry.get("boxes", {})
            cells += [_fmt(image.get("accuracy")), _fmt(image.get("empty_fp_rate")),
                      _fmt(image.get("animal_recall")), _fmt(boxes.get("box_recall50"))]  # fmt: skip
        site_rows.append(cells)
    lines += [*_table(header, site_rows), ""]
    lines += ["## How thresholds were chosen", ""]
    for r in reports:
        lines += [f"- {r.role} ({r.model}): " + "; ".join(f"{c}: {h}" for c, h in r.thresholds_how.items())]
    lines += ["", "![coverage vs accuracy](coverage.png)", ""]
    return "\n".join(lines)


def plot_coverage(reports: list[ModelReport], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for report, colour in zip(reports, ("#2a7f62", "#c0392b", "#2c6fbb", "#8e44ad"), strict=False):
        levels = [p["confidence"] for p in report.coverage]
        ax.plot(
            levels,
            [p["coverage"] for p in report.coverage],
            color=colour,
            label=f"{report.role}: share decided",
        )
        ax.plot(
            levels,
            [p["accuracy"] for p in report.coverage],
            "--",
            color=colour,
            label=f"{report.role}: accuracy",
        )
    ax.set_xlabel("confidence required for an automatic animal/empty decision")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Photos decided automatically vs accuracy on them")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(
    reports: list[ModelReport],
    out: Path,
    title: str,
    notes: list[str] | None = None,
    appendix: list[str] | None = None,
) -> Path:
    """report.json, report.md and coverage.png in `out`; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps([asdict(r) for r in reports], indent=1, default=float))
    plot_coverage(reports, out / "coverage.png")
    path = out / "report.md"
    path.write_text("\n".join([markdown(reports, title, notes), *(appendix or [])]))
    return path
