"""`trapline train prepare | fit | evaluate` (CLI output: tables go to stdout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trapline.contracts import CATEGORIES

DEFAULT_WEIGHTS = Path("../shared/weights/yolov8n-coco.pt")


def _prepare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trapline.training.prepare import prepare
    from trapline.training.summary import tallies

    prepared = prepare(
        args.images,
        args.out,
        classes=args.classes.split(","),
        burst_gap_s=args.burst_gap,
        seed=args.seed,
        megadetector=args.megadetector,
        md_threshold=args.md_threshold,
        md_ignore_below=args.md_ignore_below,
        coco=args.coco,
        yolo_labels=args.yolo_labels,
        yolo_classes=args.yolo_classes.split(",") if args.yolo_classes else None,
        species_csv=args.species,
    )
    console = Console()
    report = prepared.report
    protected = ", ".join(report.protected_classes) or "-"
    console.print(
        f"{len(prepared.records)} images prepared in {args.out}: {report.duplicates} duplicates and"
        f" {report.thinned} burst frames removed (never thinned: {protected}); left out"
        f" {prepared.excluded_unlabelled} unlabelled and {prepared.excluded_ambiguous} ambiguous images"
    )
    for title, counts in tallies(prepared.records, prepared.splits).items():
        table = Table(title=title, show_header=False)
        for key, value in counts.most_common():
            table.add_row(key, str(value))
        console.print(table)
    console.print(f"dataset: {prepared.data_yaml}\nplot: {prepared.plot}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from trapline.training.fit import fit

    best = fit(
        args.data,
        args.weights,
        args.out,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        seed=args.seed,
        oversample=args.oversample,
        patience=args.patience,
        device=args.device,
        freeze=args.freeze,
    )
    print(f"best weights: {best}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from trapline.training.evaluate import evaluate, write_report

    report = evaluate(args.model, args.data, args.split, args.imgsz, args.conf, args.target_precision)
    baseline = (
        evaluate(args.baseline, args.data, args.split, args.imgsz, args.conf, args.target_precision)
        if args.baseline
        else None
    )
    markdown = write_report(
        report, args.out, f"Evaluation of {args.model.name} ({args.split} split)", baseline
    )
    print(markdown.read_text())
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """`trapline train prepare | fit | evaluate`."""
    train = parser.add_subparsers(dest="train_command", required=True)
    prep = train.add_parser("prepare", help="ingest images + labels, clean, split, write datasets and a plot")
    prep.add_argument("--images", type=Path, required=True, help="folder of camera-trap images")
    prep.add_argument("--out", type=Path, required=True, help="output folder")
    prep.add_argument("--megadetector", type=Path, help="MegaDetector batch output JSON")
    prep.add_argument("--md-threshold", type=float, default=0.8, help="MD boxes at or above become labels")
    prep.add_argument("--md-ignore-below", type=float, default=0.1, help="MD boxes below are ignored")
    prep.add_argument("--coco", type=Path, help="COCO Camera Traps JSON")
    prep.add_argument("--yolo-labels", type=Path, help="folder of YOLO txt labels")
    prep.add_argument("--yolo-classes", help="class names of the YOLO labels, comma-separated")
    prep.add_argument("--species", type=Path, help="CSV with file,species")
    prep.add_argument("--classes", default=",".join(CATEGORIES), help="detector classes")
    prep.add_argument("--burst-gap", type=float, default=1.0, help="thin images closer than this (s)")
    prep.add_argument("--seed", type=int, default=0)
    prep.set_defaults(handler=_prepare)

    fit = train.add_parser("fit", help="fine-tune YOLOv8 (Ultralytics, offline)")
    fit.add_argument("--data", type=Path, required=True, help="data.yaml from `train prepare`")
    fit.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="starting weights (.pt)")
    fit.add_argument("--out", type=Path, required=True)
    fit.add_argument("--epochs", type=int, default=50)
    fit.add_argument("--imgsz", type=int, default=640)
    fit.add_argument("--batch", type=int, default=8)
    fit.add_argument("--patience", type=int, default=20)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default="cpu", help="cpu, or a CUDA device index")
    fit.add_argument("--oversample", action="store_true", help="repeat images of rare classes")
    fit.add_argument("--freeze", type=int, default=0, help="freeze the first N layers (10 = backbone)")
    fit.set_defaults(handler=_fit)

    ev = train.add_parser("evaluate", help="metrics report (Markdown + JSON + PNG) on a split")
    ev.add_argument("--model", type=Path, required=True, help=".pt, .onnx or .tflite")
    ev.add_argument("--data", type=Path, required=True, help="data.yaml")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--imgsz", type=int, default=640)
    ev.add_argument("--conf", type=float, default=0.25, help="operating confidence for P/R/F1")
    ev.add_argument("--target-precision", type=float, default=0.95)
    ev.add_argument("--baseline", type=Path, help="a second model to compare against")
    ev.add_argument("--out", type=Path, required=True)
    ev.set_defaults(handler=_evaluate)
