"""ONNX Runtime backend (FP32, QDQ INT8 and ConvInteger INT8 models)."""

from __future__ import annotations

import importlib.util

import numpy as np

from trapline.edge.backends.base import BackendInfo, InferenceBackend, ModelLoadError, TensorSpec

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


class OnnxRuntimeBackend(InferenceBackend):
    key = "onnxruntime"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def _load(self) -> BackendInfo:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # idle intra-op threads sleep instead of spinning: on a trap's few cores the frame decoder
        # (edge.prefetch), MQTT and uploads need the CPU between runs (the agent's time per frame:
        # 32 -> 24 ms on 2 cores, README "Benchmarks"); the server's extractor does the same
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(self.content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for every flavour of bad file
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected one input, found {len(inputs)}")
        self._input_name = inputs[0].name
        in_spec = TensorSpec(
            tuple(d if isinstance(d, int) else 1 for d in inputs[0].shape),
            np.dtype(_ORT_DTYPES.get(inputs[0].type, np.float32)),
        )
        out_spec = TensorSpec(
            tuple(d if isinstance(d, int) else -1 for d in outputs[0].shape),
            np.dtype(_ORT_DTYPES.get(outputs[0].type, np.float32)),
        )
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        return BackendInfo(in_spec, out_spec, meta)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self._input_name: tensor})
        return np.asarray(out[0])
