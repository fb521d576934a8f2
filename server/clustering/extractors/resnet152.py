"""ResNet-152 (torchvision, ImageNet weights, final layer removed, eval, frozen): 2048-d features,
on PyTorch or on ONNX Runtime (the same network exported once, cached beside the features).

The weights are a local file (settings.resnet152_weights). When it is missing they are downloaded
there if this machine is online; otherwise the error names the file to provide. Tests build the
network with random weights (`random_seed`) to exercise the mechanics; cluster quality is measured
with pretrained extractors only.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np

from trapline.files import atomic_write, file_sha256
from trapline.server.clustering.extractors.base import (
    WeightsMissingError,
    batch_session_options,
    imagenet_tensor,
)

log = logging.getLogger(__name__)

WEIGHTS_URL = "https://download.pytorch.org/models/resnet152-f82ba261.pth"  # IMAGENET1K_V2
DIM = 2048


def _download(target: Path, timeout_s: float) -> None:
    import torch

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading ResNet-152 ImageNet weights to %s", target)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(target), progress=True)
    finally:
        socket.setdefaulttimeout(previous)


def build_network(weights: Path | None, random_seed: int | None = None, allow_download: bool = True) -> Any:
    """The frozen feature network (torch.nn.Module): fc replaced by identity, eval mode."""
    if random_seed is None:
        if weights is None:
            raise WeightsMissingError("no ResNet-152 weights file configured")
        if not weights.is_file():
            reason = "downloads are off"
            if allow_download:
                try:
                    _download(weights, 20.0)
                except (OSError, RuntimeError, ValueError) as exc:
                    weights.unlink(missing_ok=True)
                    reason = f"download failed: {exc}"
            if not weights.is_file():
                raise WeightsMissingError(
                    f"ResNet-152 ImageNet weights are not at {weights} ({reason}). Copy torchvision's"
                    f" resnet152-f82ba261.pth ({WEIGHTS_URL}) to {weights}, or set"
                    " TRAPLINE_SERVER_RESNET152_WEIGHTS to where it is."
                )
    import torch
    import torchvision

    if random_seed is not None:
        torch.manual_seed(random_seed)
        net = torchvision.models.resnet152(weights=None)
    else:
        net = torchvision.models.resnet152(weights=None)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


class TorchResNet152:
    dim = DIM

    def __init__(
        self, weights: Path | None, random_seed: int | None = None, threads: int | None = None
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.net = build_network(weights, random_seed)
        origin = f"random weights (seed {random_seed})" if random_seed is not None else str(weights)
        self.key = "resnet152" if random_seed is None else f"resnet152-random{random_seed}"
        self.description = f"ResNet-152 on PyTorch, {origin}"

    def extract(self, crops: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.net(torch.from_numpy(imagenet_tensor(crops)))
        return np.asarray(out.numpy(), dtype=np.float32)


def export_onnx(net: Any, target: Path) -> Path:
    """The network as ONNX with a dynamic batch (written atomically: a killed export leaves none)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 224, 224),
        buffer,
        input_names=["input"],
        output_names=["features"],
        dynamic_axes={"input": {0: "n"}, "features": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, buffer.getvalue())
    return target


def onnx_path(cache_dir: Path, weights: Path | None, random_seed: int | None) -> Path:
    if random_seed is not None:
        return cache_dir / f"resnet152-random{random_seed}.onnx"
    if weights is None:
        raise WeightsMissingError("no ResNet-152 weights file configured")
    return cache_dir / f"resnet152-{file_sha256(weights)[:12]}.onnx"


class OnnxResNet152:
    """The same network on ONNX Runtime; exported from PyTorch the first time, then cached."""

    dim = DIM

    def __init__(
        self,
        weights: Path | None,
        cache_dir: Path,
        random_seed: int | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        path = onnx_path(cache_dir, weights if random_seed is None else None, random_seed)
        if not path.exists():
            log.info("exporting ResNet-152 to ONNX (%s), once", path)
            export_onnx(build_network(weights, random_seed), path)
        options = batch_session_options(threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path
        origin = f"random weights (seed {random_seed})" if random_seed is not None else str(weights)
        self.key = "resnet152" if random_seed is None else f"resnet152-random{random_seed}"
        self.description = f"ResNet-152 on ONNX Runtime, {origin}"

    def extract(self, crops: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["features"], {"input": imagenet_tensor(crops)})
        return np.asarray(out, dtype=np.float32)
