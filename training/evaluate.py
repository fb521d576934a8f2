"""`trapline train evaluate`: score a model on a dataset split; write Markdown, JSON and PNG.

A `.pt` runs through Ultralytics; an exported `.onnx`/`.tflite` runs through the trap's own
`edge.detector.Detector`, so what is scored is exactly what the trap runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2
import yaml
from tqdm import tqdm

from trapline.edge.model_info import COCO_CATEGORIES
from trapline.training.boxes import yolo_to_md
from trapline.training.metrics import Box, ImageResult, Report, evaluate_results

Predictor = Callable[[Path], list[Box]]
LOW_CONF = 0.001  # keep nearly everything: AP needs the whole precision-recall curve


def _to_xyxy(md: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = md
    return (x, y, x + w, y + h)


def ultralytics_predictor(weights: Path, imgsz: int) -> Predictor:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    names = {int(k): str(v) for k, v in model.names.items()}
    is_coco = len(names) == 80 and names[0] == "person"

    def predict(path: Path) -> list[Box]:
        result = model.predict(str(path), conf=LOW_CONF, imgsz=imgsz, verbose=False)[0]
        boxes = []
        for xyxyn, conf, cls in zip(
            result.boxes.xyxyn.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist(), strict=True
        ):
            name = names[int(cls)]
            category = COCO_CATEGORIES.get(name) if is_coco else name
            if category is not None:
                boxes.append(Box(category, tuple(xyxyn), float(conf)))
        return boxes

    return predict


def edge_predictor(model_path: Path) -> Predictor:
    from trapline.edge.detector import Detector

    detector = Detector(model_path, conf_threshold=LOW_CONF)

    def predict(path: Path) -> list[Box]:
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"cannot read {path}")
        return [Box(d.category, _to_xyxy(d.bbox), d.conf) for d in detector.detect(image).detections]

    return predict


def predictor_for(model: Path, imgsz: int) -> Predictor:
    return ultralytics_predictor(model, imgsz) if model.suffix == ".pt" else edge_predictor(model)


def load_split(data_yaml: Path, split: str) -> tuple[list[str], list[tuple[Path, list[Box]]]]:
    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data.get("path") or data_yaml.parent)
    names = data["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    images = sorted((root / data[split]).iterdir())
    items = []
    for image in images:
        label = root / "labels" / split / image.with_suffix(".txt").name
        truth = []
        if label.exists():
            for line in label.read_text().splitlines():
                if line.strip():
                    cls, *box = line.split()
                    md = yolo_to_md(tuple(float(v) for v in box))  # type: ignore[arg-type]
                    truth.append(Box(classes[int(cls)], _to_xyxy(md)))
        items.append((image, truth))
    return classes, items


def evaluate(
    model: Path,
    data_yaml: Path,
    split: str = "test",
    imgsz: int = 640,
    conf_threshold: float = 0.25,
    target_precision: float = 0.95,
) -> Report:
    classes, items = load_split(data_yaml, split)
    predict = predictor_for(model, imgsz)
    results = [
        ImageResult(path.name, truth, predict(path))
        for path, truth in tqdm(items, desc=f"evaluating {model.name} on {split}", unit="img")
    ]
    return evaluate_results(results, classes, conf_threshold, target_precision)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def write_report(report: Report, out: Path, title: str, baseline: Report | None = None) -> Path:
    """report.json, report.md and three PNGs in `out`; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(
        json.dumps({"model": asdict(report), "baseline": asdict(baseline) if baseline else None}, indent=1)
    )
    _plots(report, out, baseline)
    rows = [
        ("precision", "precision"),
        ("recall", "recall"),
        ("F1", "f1"),
        ("mean IoU (matched)", "mean_iou"),
        ("mAP50", "map50"),
        ("mAP50-95", "map50_95"),
        ("image-level empty vs animal accuracy", "image_accuracy"),
    ]
    lines = [
        f"# {title}",
        "",
        f"{report.images} test images; P/R/F1 at confidence >= {report.conf_threshold}.",
        "",
    ]
    header = "| metric | model |" + (" baseline |" if baseline else "")
    lines += [header, "|---|---|" + ("---|" if baseline else "")]
    for label, key in rows:
        cells = f"| {label} | {_fmt(getattr(report, key))} |"
        lines.append(cells + (f" {_fmt(getattr(baseline, key))} |" if baseline else ""))
    extra_head = " baseline F1 | baseline AP50 |" if baseline else ""
    lines += [
        "",
        "## Per class",
        "",
        "| class | instances | precision | recall | F1 | AP50 |" + extra_head,
        "|---|---|---|---|---|---|" + ("---|---|" if baseline else ""),
    ]
    for name, values in report.per_class.items():
        row = (
            f"| {name} | {int(values['instances'])} | {_fmt(values['precision'])} | {_fmt(values['recall'])}"
            f" | {_fmt(values['f1'])} | {_fmt(values['ap50'])} |"
        )
        if baseline:
            other = baseline.per_class.get(name, {})
            row += f" {_fmt(other.get('f1'))} | {_fmt(other.get('ap50'))} |"
        lines.append(row)
    labels = [*report.classes, "background"]
    lines += [
        "",
        "## Confusion matrix (rows: truth, columns: predicted)",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for name, counts in zip(labels, report.confusion, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in counts) + " |")
    chosen = report.threshold_for_precision
    lines += [
        "",
        "## Automation",
        "",
        f"Lowest animal-confidence threshold with image-level precision >= {chosen.get('target_precision')}:"
        f" {_fmt(chosen.get('threshold'))} (recall there: {_fmt(chosen.get('recall_at_threshold'))}).",
        "",
        "![threshold curve](threshold_curve.png) ![confusion](confusion.png) ![per class](per_class.png)",
        "",
    ]
    markdown = out / "report.md"
    markdown.write_text("\n".join(lines))
    return markdown


def _plots(report: Report, out: Path, baseline: Report | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rep, label in ((report, "model"), (baseline, "baseline")):
        if rep is None or not rep.threshold_curve:
            continue
        levels = [p["confidence"] for p in rep.threshold_curve]
        ax.plot(levels, [p["handled"] for p in rep.threshold_curve], label=f"{label}: share decided")
        ax.plot(
            levels, [p["accuracy"] for p in rep.threshold_curve], "--", label=f"{label}: accuracy on those"
        )
    ax.set_xlabel("confidence required for an automatic animal/empty decision")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Images handled automatically vs accuracy")
    fig.tight_layout()
    fig.savefig(out / "threshold_curve.png", dpi=90)
    plt.close(fig)

    labels = [*report.classes, "background"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(report.confusion, cmap="Greens")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(report.confusion):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(report.per_class)
    ax.bar(names, [report.per_class[n]["f1"] for n in names], color="#4a7c59")
    ax.set_ylim(0, 1)
    ax.set_title("F1 per class")
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=90)
    plt.close(fig)
