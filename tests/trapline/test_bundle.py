from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trapline.bundle import BundleError, pack_bundle, sign_bundle, unpack_bundle, verify_bundle
from trapline.edge.agent import AgentCounters, load_detector
from trapline.edge.config import COCO_STAND_IN, PACKAGED_MODEL, AgentConfig
from trapline.keyring import generate_keys
from trapline.manifest import ModelManifest


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keys(tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub")
    return tmp_path / "keys" / "release.key", tmp_path / "keys" / "release.pub"


@pytest.fixture
def bundle(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copyfile(COCO_STAND_IN, folder / "model.tflite")
    manifest = ModelManifest.read(COCO_STAND_IN.with_suffix(".json"))
    sign_bundle(folder, manifest.model_copy(update={"model_file": "model.tflite", "version": "7"}), keys[0])
    return folder


def test_a_signed_bundle_verifies_and_the_agent_runs_it(bundle: Path, keys: tuple[Path, Path]) -> None:
    assert (keys[0].stat().st_mode & 0o777) == 0o600
    manifest = verify_bundle(bundle, keys[1])
    assert manifest.version == "7"
    assert set(manifest.files) == {"model.tflite"}
    config = AgentConfig.model_validate(
        {"device_id": "t", "source": {"type": "folder", "path": str(bundle)},
         "model": {"path": str(bundle), "keyring": str(keys[1]), "fallback_to_packaged": False}}
    )  # fmt: skip
    detector = load_detector(config, AgentCounters())
    assert detector.info.version == "7"
    assert detector.backend.path == bundle / "model.tflite"


@pytest.mark.parametrize("target", ["model.tflite", "manifest.json"])
def test_one_changed_byte_is_rejected(bundle: Path, keys: tuple[Path, Path], target: str) -> None:
    path = bundle / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    message = "does not match its sha256" if target == "model.tflite" else "signature does not verify"
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle, keys[1])


def test_another_key_or_a_missing_file_is_rejected(bundle: Path, tmp_path: Path) -> None:
    generate_keys(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(BundleError, match="signature does not verify"):
        verify_bundle(bundle, tmp_path / "other.pub")
    (bundle / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="not a bundle"):
        verify_bundle(bundle, tmp_path / "other.pub")


def test_the_agent_refuses_a_tampered_bundle_and_keeps_working(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes()[:-10])
    config = AgentConfig.model_validate(
        {"device_id": "t", "source": {"type": "folder", "path": str(bundle)},
         "model": {"path": str(bundle), "keyring": str(keys[1])}}
    )  # fmt: skip
    counters = AgentCounters()
    detector = load_detector(config, counters)
    assert counters.model_load_failures == 1
    assert detector.backend.path.parent == PACKAGED_MODEL


def test_archive_round_trip_refuses_path_tricks(
    bundle: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    archive = pack_bundle(bundle, tmp_path / "bundle.tar.gz")
    unpacked = unpack_bundle(archive.read_bytes(), tmp_path / "unpacked")
    assert verify_bundle(unpacked, keys[1]).version == "7"
    import io
    import tarfile

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="unexpected entry"):
        unpack_bundle(evil.getvalue(), tmp_path / "evil")


def test_the_shipped_bundle_verifies_with_the_packaged_release_key() -> None:
    from trapline.edge.config import PACKAGED_KEYRING

    manifest = verify_bundle(PACKAGED_MODEL, PACKAGED_KEYRING)
    assert manifest.name == "trapline-nano"
    assert manifest.class_names == ["animal", "person", "vehicle"]
    assert "test_split" in manifest.metrics
