"""A PyTorch checkpoint behind the trap's backend interface, so that evaluation runs a `.pt` with
exactly the pre- and post-processing of the exported models (edge.yolo letterbox and decode)
instead of Ultralytics' own predict. For evaluation on a workstation only: the trap never imports
torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trapline.edge.backends.base import BackendInfo, InferenceBackend, TensorSpec


class TorchBackend(InferenceBackend):
    key: ClassVar[str] = "torch"

    def __init__(self, path: Path, threads: int = 2, imgsz: int = 640) -> None:
        self.imgsz = imgsz
        super().__init__(path, threads)

    @classmethod
    def available(cls) -> bool:
        return True

    def _load(self) -> BackendInfo:
        import torch
        from ultralytics import YOLO

        torch.set_num_threads(self.threads)
        yolo = YOLO(str(self.path))
        self._model: Any = yolo.model.float().eval()
        shape = (1, 3, self.imgsz, self.imgsz)
        names = {int(k): str(v) for k, v in yolo.names.items()}
        out = self.run(np.zeros(shape, np.float32))
        return BackendInfo(
            TensorSpec(shape, np.dtype(np.float32)),
            TensorSpec(tuple(out.shape), np.dtype(np.float32)),
            {"names": names, "imgsz": [self.imgsz, self.imgsz]},
        )

    def run(self, tensor: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._model(torch.from_numpy(tensor))
        head = out[0] if isinstance(out, list | tuple) else out
        return np.asarray(head.numpy())
