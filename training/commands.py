"""`trapline train prepare | fit | evaluate` (CLI output: tables go to stdout)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from trapline.contracts import CATEGORIES

DEFAULT_WEIGHTS = Path("../shared/weights/yolov8n-coco.pt")


def _prepare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from trapline.training.prepare import prepare, prepare_spec
    from trapline.training.spec import DatasetSpec
    from trapline.training.summary import tallies

    if args.spec is None and args.images is None:
        print("trapline train prepare: give --spec, or --images with label files")
        return 2
    if args.spec is not None:
        spec = DatasetSpec.read(args.spec).resolved(args.data_root)
        if args.label_space:
            spec = spec.model_copy(update={"label_space": args.label_space})
        prepared = prepare_spec(spec, args.out)
    else:
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
    if prepared.split_rows:
        table = Table(title="split (by site; ambiguous photos count for image-level metrics only)")
        columns = [c for c in prepared.split_rows[0] if c != "site names"]
        for column in columns:
            table.add_column(column)
        for row in prepared.split_rows:
            table.add_row(*(str(row[c]) for c in columns))
        console.print(table)
    for choice in prepared.thresholds:
        console.print(
            f"teacher {choice.teacher}: threshold {choice.threshold:.2f} (best balanced accuracy on"
            f" {choice.positives} photos with and {choice.negatives} without its classes, human labels,"
            " train and val sites)"
        )
    if prepared.derived:
        console.print("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(prepared.derived.items())))
    if prepared.sheets:
        console.print(f"contact sheets (check derived boxes by eye): {prepared.sheets[0].parent}")
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

    roles, modes = args.role or [], args.thresholds or []
    reports = []
    for i, model in enumerate(args.model):
        raw = modes[i] if i < len(modes) else "val"
        mode: Literal["val", "own", "teacher"] | float = (
            "own"
            if raw == "own"
            else "teacher"
            if raw == "teacher"
            else "val"
            if raw == "val"
            else float(raw)
        )
        reports.append(
            evaluate(
                model,
                args.dataset,
                args.split,
                mode,
                args.target_precision,
                imgsz=args.imgsz,
                role=roles[i] if i < len(roles) else f"model {i + 1}",
                keyring=args.keyring,
            )  # fmt: skip
        )
    sections = [path.read_text() for path in args.append or []]
    markdown = write_report(reports, args.out, f"Evaluation on the {args.split} split", appendix=sections)
    print(markdown.read_text())
    return 0


def _teacher(args: argparse.Namespace) -> int:
    from trapline.training.ingest import IMAGE_SUFFIXES
    from trapline.training.teachers import run_teacher

    files = sorted(
        p.relative_to(args.images).as_posix()
        for p in args.images.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    out = run_teacher(args.images, files, args.model, args.kind, args.out, args.min_conf)
    print(f"teacher boxes for {len(files)} photos (MegaDetector batch format, model output): {out}")
    return 0


def _bursts(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from trapline.training.bursts_eval import bursts_markdown, real_bursts, summarise
    from trapline.training.evaluate import Dataset, choose_model_thresholds, load_model

    dataset = Dataset.load(args.dataset)
    loaded = load_model(args.model, keyring=args.keyring)
    mode: Literal["val", "own"] | float = (
        "own" if args.thresholds == "own" else "val" if args.thresholds == "val" else float(args.thresholds)
    )
    thresholds, _, _ = choose_model_thresholds(loaded, dataset, args.model, mode, args.target_precision)
    rows = []
    for split in args.splits.split(","):
        bursts = real_bursts(loaded, dataset, [split], thresholds)
        rows += [{"split": split, **summarise(bursts, level)} for level in args.lone_min_conf]
    table = Table(title=f"Sequence smoothing on real bursts ({loaded.name}, thresholds {thresholds})")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=200).print(table)
    if args.out:
        args.out.write_text(json.dumps({"thresholds": thresholds, "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(bursts_markdown(rows, thresholds))
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    """`trapline train prepare | fit | evaluate | bursts`."""
    train = parser.add_subparsers(dest="train_command", required=True)
    prep = train.add_parser("prepare", help="ingest images + labels, clean, split, write datasets and a plot")
    prep.add_argument("--spec", type=Path, help="dataset spec YAML (sources, teachers, split by site)")
    prep.add_argument(
        "--data-root", type=Path, default=Path("../shared/data"), help="what the spec's paths are relative to"
    )
    prep.add_argument("--label-space", choices=["classes", "coco"], help="override the spec's label_space")
    prep.add_argument("--images", type=Path, help="folder of camera-trap images (without --spec)")
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

    teacher = train.add_parser(
        "teacher", help="run a teacher detector over photos (MegaDetector batch JSON; resumes)"
    )
    teacher.add_argument("--images", type=Path, required=True)
    teacher.add_argument("--model", type=Path, required=True, help="MegadetectorLite .onnx, or a trap model")
    teacher.add_argument("--kind", choices=["yolox", "yolov8"], default="yolox")
    teacher.add_argument("--min-conf", type=float, default=0.05, help="keep boxes at or above")
    teacher.add_argument("--out", type=Path, required=True)
    teacher.set_defaults(handler=_teacher)

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

    ev = train.add_parser(
        "evaluate", help="score models side by side on a split (Markdown + JSON + PNG); same pre/post for all"
    )
    ev.add_argument("--model", type=Path, action="append", required=True, help=".pt, .onnx, .tflite; repeat")
    ev.add_argument("--role", action="append", help="what each --model is (shipped, teacher, base ...)")
    ev.add_argument("--dataset", type=Path, required=True, help="folder (or data.yaml) from `train prepare`")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--imgsz", type=int, help="input size of a .pt (default: its training size)")
    ev.add_argument(
        "--thresholds",
        action="append",
        help="per --model: val (per class, chosen on val; default), own (its manifest), teacher (the"
        " threshold prepare chose for it as a teacher), or a number",
    )
    ev.add_argument("--target-precision", type=float, default=0.9, help="box precision thresholds aim at")
    ev.add_argument("--append", type=Path, nargs="*", help="Markdown sections to add (export checks, bursts)")
    ev.add_argument("--out", type=Path, required=True)
    ev.add_argument("--keyring", type=Path, help="keys a bundle --model is verified with (default: packaged)")
    ev.set_defaults(handler=_evaluate)

    bursts = train.add_parser("bursts", help="sequence smoothing measured on the dataset's real bursts")
    bursts.add_argument("--model", type=Path, required=True)
    bursts.add_argument("--dataset", type=Path, required=True)
    bursts.add_argument("--splits", default="val,test,train", help="splits whose bursts to replay")
    bursts.add_argument("--thresholds", default="val", help="val (chosen on val), own, or a number")
    bursts.add_argument("--target-precision", type=float, default=0.9)
    bursts.add_argument(
        "--lone-min-conf", type=float, nargs="+", default=[0.0, 0.4, 0.5, 0.6, 0.7], help="levels to compare"
    )
    bursts.add_argument("--out", type=Path, help="JSON with the table")
    bursts.add_argument("--markdown", type=Path, help="the table as a Markdown section")
    bursts.add_argument(
        "--keyring", type=Path, help="keys a bundle --model is verified with (default: packaged)"
    )
    bursts.set_defaults(handler=_bursts)
