"""`trapline export`, `trapline export bundle`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> int:
    from trapline.export.exporter import EXPORT_TARGETS, ExportCheckError, export_all

    if args.weights is None or args.dataset is None:
        print(f"trapline export: --weights and --dataset are required (targets: {', '.join(EXPORT_TARGETS)})")
        return 2
    try:
        results = export_all(
            args.weights, args.dataset, args.out, args.formats.split(","), args.imgsz, args.max_map50_drop,
            args.split, args.recipe,
        )  # fmt: skip
    except ExportCheckError as exc:
        print(f"EXPORT FAILED: {exc}")
        return 1
    for r in results:
        agree = (
            f", agreement with FP32 {r.agreement_with_fp32:.3f}" if r.agreement_with_fp32 is not None else ""
        )
        scores = (
            f"{r.split} mAP50 {r.map50:.3f} (FP32 {r.fp32_map50:.3f}, PyTorch {r.pytorch_map50:.3f}{agree})"
        )
        print(f"{r.target:12s} {r.size_bytes / 1e6:6.1f} MB  {scores}  {r.path}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    import json

    from trapline.export.bundle import build_bundle, bundle_metrics, thresholds_from, training_provenance
    from trapline.manifest import Thresholds

    extra = {}
    for path in args.measurements or []:
        extra[path.stem] = json.loads(path.read_text())
    metrics = bundle_metrics(args.metrics, args.export_report, extra)
    thresholds = thresholds_from(args.metrics, args.conf) if args.metrics else Thresholds(conf=args.conf)
    provenance = training_provenance(args.training_run) if args.training_run else {}
    files = [p for p in (args.metrics, *(args.attach or [])) if p]
    manifest = build_bundle(
        args.model,
        args.out,
        args.name,
        args.version,
        args.private_key,
        metrics=metrics,
        provenance=provenance,
        thresholds=thresholds,
        extra_files=files,
        archive=args.archive,
        reference_frames=args.reference_frames,
        min_agent_version=args.min_agent_version,
    )
    print(f"signed bundle {manifest.name} v{manifest.version} in {args.out}: {', '.join(manifest.files)}")
    return 0


def _rollback_grant(args: argparse.Namespace) -> int:
    from trapline.files import atomic_write
    from trapline.keyring import KeyringError
    from trapline.manifest import MANIFEST_NAME, ModelManifest
    from trapline.rollback import sign_rollback

    manifest = ModelManifest.read(args.bundle / MANIFEST_NAME)
    model_sha256 = manifest.files.get(manifest.model_file)
    if model_sha256 is None:
        print(f"{args.bundle}: the manifest does not list its model file; sign the bundle first")
        return 1
    try:
        grant = sign_rollback(args.private_key, manifest.name, manifest.version, model_sha256)
    except KeyringError as exc:
        print(f"cannot sign: {exc}")
        return 1
    atomic_write(args.out, grant.to_json())
    print(
        f"rollback grant for {manifest.name} v{manifest.version} (key {grant.key_id}) in {args.out};"
        f" add it with `trapline server release grant <release id> {args.out}`"
    )
    return 0


def register(exp: argparse.ArgumentParser) -> None:
    """`trapline export ...` and `trapline export bundle ...`."""
    exp.add_argument("--weights", type=Path, help="trained checkpoint (.pt)")
    exp.add_argument(
        "--dataset", "--data", type=Path, help="dataset folder from `train prepare` (checks, calibration)"
    )
    exp.add_argument("--split", default="val", help="the split the INT8 check scores")
    exp.add_argument(
        "--recipe",
        default="int8-float-decode-lastconv",
        help="LiteRT INT8 recipe (export.litert_int8.RECIPES)",
    )
    exp.add_argument("--formats", default="onnx-fp32,onnx-int8,tflite-fp32,tflite-int8")
    exp.add_argument("--imgsz", type=int, default=640)
    exp.add_argument(
        "--max-map50-drop",
        type=float,
        default=1.0,
        help="points of mAP50 an INT8 model may lose against FP32",
    )
    exp.add_argument("--out", type=Path, default=Path("exports"))
    exp.set_defaults(handler=_export)
    sub = exp.add_subparsers(dest="export_command")
    bundle = sub.add_parser("bundle", help="sign a model file into a bundle")
    bundle.add_argument("--model", type=Path, required=True, help=".onnx or .tflite")
    bundle.add_argument("--name", required=True)
    bundle.add_argument("--version", required=True)
    bundle.add_argument("--private-key", type=Path, required=True)
    bundle.add_argument(
        "--metrics", type=Path, help="report.json from `train evaluate` (its per-class thresholds are used)"
    )
    bundle.add_argument("--export-report", type=Path, help="export_report.json from `trapline export`")
    bundle.add_argument("--training-run", type=Path, help="the Ultralytics run folder (its args.yaml)")
    bundle.add_argument("--attach", type=Path, nargs="*", help="more files to ship (report.md, plots)")
    bundle.add_argument(
        "--conf", type=float, default=0.25, help="confidence threshold of classes without their own"
    )
    bundle.add_argument(
        "--measurements", type=Path, nargs="*", help="more JSON results to carry in the manifest's metrics"
    )
    bundle.add_argument("--archive", action="store_true", help="also write <out>.tar.gz")
    bundle.add_argument(
        "--reference-frames",
        type=Path,
        nargs="*",
        help="pictures for the trap's self-test before it switches (default: three packaged samples;"
        " give none to ship without)",
    )
    bundle.add_argument("--min-agent-version", help="oldest trap agent that can run this bundle")
    bundle.add_argument("--out", type=Path, required=True)
    bundle.set_defaults(handler=_bundle)
    grant = sub.add_parser(
        "rollback-grant",
        help="sign permission for traps to go back to this (older) bundle (anti-rollback otherwise refuses)",
    )
    grant.add_argument("--bundle", type=Path, required=True, help="the signed bundle directory")
    grant.add_argument("--private-key", type=Path, required=True, help="a release key the traps trust")
    grant.add_argument("--out", type=Path, required=True, help="where to write the grant (JSON)")
    grant.set_defaults(handler=_rollback_grant)
