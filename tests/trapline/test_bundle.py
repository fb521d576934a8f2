from __future__ import annotations

import io
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from trapline.bundle import BundleError, pack_bundle, sign_bundle, unpack_bundle, verify_bundle
from trapline.edge.agent import AgentCounters, load_detector
from trapline.edge.config import COCO_STAND_IN, PACKAGED_MODEL, AgentConfig
from trapline.edge.detector import Detector
from trapline.keyring import generate_keys
from trapline.manifest import ModelManifest, Thresholds
from trapline.model_source import resolve_model


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


def _evil_manifest(folder: Path) -> None:
    """An unsigned `model.json` dropped beside the model: it claims to be another model."""
    signed = ModelManifest.read(folder / "manifest.json")
    evil = signed.model_copy(
        update={"name": "evil-model", "version": "v999", "thresholds": Thresholds(conf=1.0)}
    )
    (folder / "model.json").write_bytes(evil.to_json())


def test_an_unsigned_file_dropped_into_a_bundle_never_overrides_the_manifest(
    bundle: Path, keys: tuple[Path, Path]
) -> None:
    _evil_manifest(bundle)
    with pytest.raises(BundleError, match="model.json not listed in the signed manifest"):
        verify_bundle(bundle, keys[1])
    # pointing the agent at the model file instead of the folder changes nothing
    for path in (bundle, bundle / "model.tflite"):
        config = AgentConfig.model_validate(
            {"device_id": "t", "source": {"type": "folder", "path": str(bundle)},
             "model": {"path": str(path), "keyring": str(keys[1])}}
        )  # fmt: skip
        counters = AgentCounters()
        detector = load_detector(config, counters)
        assert counters.model_load_failures == 1  # refused, and the trap keeps working ...
        assert detector.info.name == "trapline-nano"  # ... on the packaged model
        assert detector.thresholds.conf < 1.0


def test_metadata_comes_only_from_the_verified_manifest(bundle: Path, keys: tuple[Path, Path]) -> None:
    source = resolve_model(bundle, keys[1])
    assert source.signed and source.manifest is not None and source.manifest.version == "7"
    _evil_manifest(bundle)  # dropped in after verification: nothing reads it any more
    detector = Detector(source)
    assert (detector.info.name, detector.info.version) == ("yolov8n-coco", "7")
    # loaded by path without its key, a bundle's model uses only what the file itself embeds
    unverified = Detector(bundle / "model.tflite")
    assert unverified.info.name == "model" and unverified.info.version != "v999"
    assert unverified.thresholds.conf < 1.0


def test_the_model_is_loaded_from_the_bytes_that_were_hashed(bundle: Path, keys: tuple[Path, Path]) -> None:
    source = resolve_model(bundle, keys[1])
    manifest = verify_bundle(bundle, keys[1])
    # swapped on disk between verification and load (a race, or a second writer)
    (bundle / "model.tflite").write_bytes(b"\x00" * 64)
    detector = Detector(source)
    assert detector.info.sha256 == manifest.files["model.tflite"]
    assert detector.detect(np.full((480, 640, 3), 114, np.uint8)).raw is not None


def _archive(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_members_are_bounded_in_size_count_and_names(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"'model.onnx' is 4096 bytes \(limit 1024\)"):
        unpack_bundle(_archive([("model.onnx", b"\0" * 4096)]), tmp_path / "a", max_file_bytes=1024)
    assert not (tmp_path / "a" / "model.onnx").exists()
    with pytest.raises(BundleError, match="more than 3 files"):
        unpack_bundle(_archive([(f"f{n}", b"x") for n in range(4)]), tmp_path / "b", max_files=3)
    with pytest.raises(BundleError, match="more than 3000 bytes"):
        unpack_bundle(
            _archive([(f"f{n}", b"x" * 1000) for n in range(4)]), tmp_path / "c", max_total_bytes=3000
        )
    # a second manifest.json later in the archive would replace the first one
    with pytest.raises(BundleError, match="unexpected entry 'manifest.json'"):
        unpack_bundle(_archive([("manifest.json", b"{}"), ("manifest.json", b"{}")]), tmp_path / "d")
    with pytest.raises(BundleError, match="damaged"):
        unpack_bundle(_archive([("model.onnx", random.randbytes(10_000))])[:5_000], tmp_path / "e")


def test_an_oversized_member_is_refused_by_its_header_before_it_is_inflated(tmp_path: Path) -> None:
    # the header claims 1 TiB; the archive itself is tiny and is never inflated
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 1 << 40
        tar.addfile(info)  # header only: the data that would follow is never read
    with pytest.raises(BundleError, match="is 1099511627776 bytes"):
        unpack_bundle(buffer.getvalue(), tmp_path / "bomb")
