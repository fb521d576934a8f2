"""The deployed detector's own backbone as a feature extractor, offline: the outputs of the YOLOv8
backbone's three stages (P3, P4 and the SPPF output P5), each averaged over the picture and
concatenated (64 + 128 + 256 = 448 values for YOLOv8n).

The graph is cut out of the model file the traps run (INT8 QDQ or FP32 ONNX), so no PyTorch and no
download is needed: the backbone stages are found by the node names Ultralytics' exporter gives
(`/model.4/cv2/act/Mul`, `/model.6/...`, `/model.9/...`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from trapline.files import atomic_write
from trapline.server.clustering.extractors.base import batch_session_options

STAGES = ("/model.4/cv2/act/Mul_output_0", "/model.6/cv2/act/Mul_output_0", "/model.9/cv2/act/Mul_output_0")


class BackboneCutError(ValueError):
    """The model file is not a YOLOv8 ONNX graph whose backbone stages can be found."""


def backbone_graph(model_file: Path, target: Path) -> Path:
    """Write the pooled-backbone graph of `model_file` to `target`: input `images` (N, 3, H, W),
    RGB 0-1, output `features` (N, C3 + C4 + C5)."""
    import onnx
    from onnx import TensorProto, helper

    if model_file.suffix != ".onnx":
        raise BackboneCutError(f"{model_file.name}: the backbone extractor needs the ONNX model")
    model = onnx.load(str(model_file))
    produced = {out for node in model.graph.node for out in node.output}
    missing = [s for s in STAGES if s not in produced]
    if missing:
        raise BackboneCutError(f"{model_file.name}: no backbone stage {missing[0]} (not a YOLOv8 export?)")
    input_name = model.graph.input[0].name
    sub = onnx.utils.Extractor(model).extract_model([input_name], list(STAGES))
    pooled = []
    for index, stage in enumerate(STAGES):
        sub.graph.node.append(helper.make_node("GlobalAveragePool", [stage], [f"gap{index}"]))
        sub.graph.node.append(helper.make_node("Flatten", [f"gap{index}"], [f"flat{index}"], axis=1))
        pooled.append(f"flat{index}")
    sub.graph.node.append(helper.make_node("Concat", pooled, ["features"], axis=1))
    del sub.graph.output[:]
    sub.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", None]))
    del sub.graph.value_info[:]
    dims = sub.graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("n", None, "h", "w"), strict=True):
        if name:
            dim.ClearField("dim_value")
            dim.dim_param = name
    sub.graph.input[0].name = input_name
    atomic_write(target, sub.SerializeToString())
    return target


class YoloBackbone:
    def __init__(
        self, model_file: Path, cache_dir: Path, threads: int | None = None, size: int = 224
    ) -> None:
        import onnxruntime as ort

        digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:12]
        path = cache_dir / f"yolo-backbone-{digest}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            backbone_graph(model_file, path)
        options = batch_session_options(threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.size = size
        probe = self.extract(np.zeros((1, size, size, 3), np.uint8))  # also warms it up
        self.dim = int(probe.shape[1])
        self.key = f"yolo-backbone-{digest}"
        self.description = (
            f"pooled YOLOv8 backbone of {model_file.parent.name}/{model_file.name} (ONNX Runtime)"
        )

    def extract(self, crops: np.ndarray) -> np.ndarray:
        tensor = np.ascontiguousarray(crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        (out,) = self.session.run(["features"], {self.input_name: tensor})
        return np.asarray(out, dtype=np.float32)
