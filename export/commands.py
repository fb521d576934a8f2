"""`trapline export`, `trapline export bundle`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> int:
    from trapline.export.exporter import EXPORT_TARGETS, ExportCheckError, export_all

    if args.weights is None or args.data is None:
        print(f"trapline export: --weights and --data are required (targets: {', '.join(EXPORT_TARGETS)})")
        return 2
    try:
        results = export_all(
            args.weights, args.data, args.out, args.formats.split(","), args.imgsz, args.max_map50_drop
        )
    except ExportCheckError as exc:
        print(f"EXPORT FAILED: {exc}")
        return 1
    for r in results:
        size_mb = r.size_bytes / 1e6
        print(f"{r.target:12s} {size_mb:6.1f} MB  val mAP50 {r.val_map50:.3f}", end="")
        print(f" (PyTorch {r.pytorch_val_map50:.3f})  {r.path}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from trapline.export.bundle import build_bundle, bundle_metrics, training_provenance
    from trapline.manifest import Thresholds

    metrics = bundle_metrics(args.metrics, args.export_report)
    provenance = training_provenance(args.training_run) if args.training_run else {}
    extra = [p for p in (args.metrics, *(args.attach or [])) if p]
    manifest = build_bundle(
        args.model,
        args.out,
        args.name,
        args.version,
        args.private_key,
        metrics=metrics,
        provenance=provenance,
        thresholds=Thresholds(conf=args.conf),
        extra_files=extra,
        archive=args.archive,
    )
    print(f"signed bundle {manifest.name} v{manifest.version} in {args.out}: {', '.join(manifest.files)}")
    return 0


def register(exp: argparse.ArgumentParser) -> None:
    """`trapline export ...` and `trapline export bundle ...`."""
    exp.add_argument("--weights", type=Path, help="trained checkpoint (.pt)")
    exp.add_argument("--data", type=Path, help="data.yaml (val split for checks, train for calibration)")
    exp.add_argument("--formats", default="onnx-fp32,onnx-int8,tflite-fp32,tflite-int8")
    exp.add_argument("--imgsz", type=int, default=640)
    exp.add_argument("--max-map50-drop", type=float, default=1.0, help="points of val mAP50 INT8 may lose")
    exp.add_argument("--out", type=Path, default=Path("exports"))
    exp.set_defaults(handler=_export)
    sub = exp.add_subparsers(dest="export_command")
    bundle = sub.add_parser("bundle", help="sign a model file into a bundle")
    bundle.add_argument("--model", type=Path, required=True, help=".onnx or .tflite")
    bundle.add_argument("--name", required=True)
    bundle.add_argument("--version", required=True)
    bundle.add_argument("--private-key", type=Path, required=True)
    bundle.add_argument("--metrics", type=Path, help="report.json from `train evaluate`")
    bundle.add_argument("--export-report", type=Path, help="export_report.json from `trapline export`")
    bundle.add_argument("--training-run", type=Path, help="the Ultralytics run folder (its args.yaml)")
    bundle.add_argument("--attach", type=Path, nargs="*", help="more files to ship (report.md, plots)")
    bundle.add_argument("--conf", type=float, default=0.25, help="default confidence threshold")
    bundle.add_argument("--archive", action="store_true", help="also write <out>.tar.gz")
    bundle.add_argument("--out", type=Path, required=True)
    bundle.set_defaults(handler=_bundle)
