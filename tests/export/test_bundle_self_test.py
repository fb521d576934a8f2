"""`trapline export bundle` records the self-test a trap repeats before switching; `trapline
export rollback-grant` signs permission to go back to a bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.ota import Release, ReleaseKit
from trapline.bundle import verify_bundle
from trapline.contracts import RollbackGrant
from trapline.edge.config import PACKAGED_MODEL
from trapline.edge.detector import Detector
from trapline.edge.ota.selftest import run_self_test
from trapline.keyring import Keyring
from trapline.manifest import ModelManifest
from trapline.rollback import verify_rollback


def test_reference_frames_are_signed_and_pass_on_the_same_model(kit: ReleaseKit, release_v2: Release) -> None:
    manifest = verify_bundle(release_v2.folder, kit.keyring)
    assert manifest.self_test is not None
    frame = manifest.self_test.frames[0]
    assert frame.file in manifest.files  # hashed and signed like the model
    assert [d.category for d in frame.detections] == ["animal"]  # the cougar
    assert (release_v2.folder / frame.file).stat().st_size < 100_000
    detector = Detector(release_v2.folder / manifest.model_file)
    result = run_self_test(detector, release_v2.folder, manifest)
    assert result.passed, result.reason


def test_the_cli_builds_a_bundle_with_three_references_and_signs_a_grant(
    kit: ReleaseKit, tmp_path: Path
) -> None:
    out = tmp_path / "bundle-1.2"
    cli = [sys.executable, "-m", "trapline.cli", "--log-level", "warning", "export"]
    subprocess.run([*cli, "bundle", "--model", str(kit.model_variant("cli")), "--name", "trapline-nano",
                    "--version", "1.2", "--private-key", str(kit.private_key), "--out", str(out), "--archive"],
                   check=True, capture_output=True)  # fmt: skip
    manifest = ModelManifest.read(out / "manifest.json")
    assert manifest.self_test is not None and len(manifest.self_test.frames) == 3
    assert run_self_test(Detector(out / manifest.model_file), out, manifest).passed
    # another model (the COCO stand-in, also finding animals) does not pass these references
    coco = run_self_test(Detector(PACKAGED_MODEL.parent / "yolov8n-coco-int8.tflite"), out, manifest)
    assert not coco.passed and coco.reason.startswith("reference-0.jpg: expected animal")
    assert (tmp_path / "bundle-1.2.tar.gz").is_file()  # beside the folder, not "bundle-1.tar.gz"
    done = subprocess.run([*cli, "rollback-grant", "--bundle", str(out), "--private-key", str(kit.private_key),
                           "--out", str(tmp_path / "grant.json")], check=True, capture_output=True, text=True)  # fmt: skip
    assert "rollback grant for trapline-nano v1.2" in done.stdout
    grant = RollbackGrant.model_validate(json.loads((tmp_path / "grant.json").read_text()))
    model_sha256 = manifest.files[manifest.model_file]
    assert (
        verify_rollback(grant, Keyring.load(kit.keyring), "trapline-nano", "1.2", model_sha256) == kit.key_id
    )
