"""ResNet-152: PyTorch and ONNX Runtime give the same features on real crops; missing weights are
named. Random weights exercise the mechanics (no machine here can download the ImageNet ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CAMTRAP, needs_shared
from trapline.server.clustering.crops import cut_square, read_rgb, square_window
from trapline.server.clustering.extractors.base import WeightsMissingError
from trapline.server.clustering.extractors.resnet152 import OnnxResNet152, TorchResNet152, build_network


def real_crops(count: int) -> np.ndarray:
    camtrap = needs_shared(CAMTRAP)
    md = json.loads((camtrap / "megadetector.json").read_text())
    crops: list[np.ndarray] = []
    for image in md["images"]:
        for det in image.get("detections") or []:
            if det["conf"] >= 0.8 and len(crops) < count:
                picture = read_rgb(camtrap / "images" / image["file"])
                h, w = picture.shape[:2]
                crops.append(cut_square(picture, square_window(tuple(det["bbox"]), w, h)))
    return np.stack(crops)


def test_missing_weights_name_the_file_to_provide(tmp_path: Path) -> None:
    target = tmp_path / "weights" / "resnet152-f82ba261.pth"
    with pytest.raises(WeightsMissingError, match=str(target)) as error:
        build_network(target, allow_download=False)
    assert "resnet152-f82ba261.pth" in str(error.value) and "TRAPLINE_SERVER_RESNET152_WEIGHTS" in str(
        error.value
    )


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch_on_real_crops(tmp_path: Path) -> None:
    crops = real_crops(6)
    torch_features = TorchResNet152(None, random_seed=7).extract(crops)
    onnx = OnnxResNet152(None, tmp_path, random_seed=7)
    onnx_features = np.vstack([onnx.extract(crops[:4]), onnx.extract(crops[4:])])  # batches of any size
    assert torch_features.shape == onnx_features.shape == (6, 2048)
    cosine = (torch_features * onnx_features).sum(1) / (
        np.linalg.norm(torch_features, axis=1) * np.linalg.norm(onnx_features, axis=1)
    )
    assert cosine.min() >= 0.999, cosine
    # different crops give different features (the network is not degenerate)
    assert np.corrcoef(torch_features)[0, 1:].max() < 0.9999
    # the export is cached: a second extractor loads it without PyTorch export
    assert OnnxResNet152(None, tmp_path, random_seed=7).path == onnx.path
