from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from trapline.edge.backends.base import ModelLoadError
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL, PACKAGED_SAMPLES
from trapline.training.evaluate import load_model


def test_a_signed_bundle_is_evaluated_as_a_trap_loads_it() -> None:
    loaded = load_model(PACKAGED_MODEL)
    assert loaded.name == "trapline-nano"
    assert set(loaded.own_thresholds) == {"animal", "person", "vehicle"}  # from the manifest
    photo = cv2.imread(str(sorted(PACKAGED_SAMPLES.glob("*.jpg"))[0]))
    assert photo is not None
    boxes = loaded.predict(photo)
    assert boxes and all(0.0 <= b.conf <= 1.0 for b in boxes)


def test_a_tampered_bundle_is_refused_with_the_reason(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(PACKAGED_MODEL, bundle)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="refusing model bundle"):
        load_model(bundle)


def test_a_bundle_is_verified_with_the_keyring_given(tmp_path: Path) -> None:
    from trapline.keyring import generate_keys

    other = tmp_path / "other-keyring"
    other.mkdir()
    key_id = generate_keys(tmp_path / "other.key", other / "placeholder.pub")
    (other / "placeholder.pub").rename(other / f"{key_id}.pub")
    with pytest.raises(ModelLoadError, match="refusing model bundle"):
        load_model(PACKAGED_MODEL, keyring=other)  # the release key is not in that keyring
    assert load_model(PACKAGED_MODEL, keyring=PACKAGED_KEYRING).name == "trapline-nano"
