from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from trapline.edge.agent import AgentCounters, load_detector
from trapline.edge.backends import BACKENDS, ModelLoadError, load_backend
from trapline.edge.backends.tflite import LiteRtBackend, TfliteBackend
from trapline.edge.config import COCO_STAND_IN, PACKAGED_MODEL, PACKAGED_MODELS, AgentConfig
from trapline.edge.detector import Detector


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.onnx", b"definitely not protobuf", "not a loadable ONNX model"),
        ("model.tflite", b"\x00" * 64, "not a loadable TFLite model"),
        ("model.pt", b"weights", "unknown model format"),
    ],
)
def test_wrong_model_files_are_refused_clearly(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        Detector(path)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_backend(tmp_path / "gone.onnx")


def test_backend_must_suit_the_format() -> None:
    with pytest.raises(ModelLoadError, match="cannot run tflite"):
        load_backend(COCO_STAND_IN, backend="onnxruntime")


def test_a_model_without_class_names_is_refused(tmp_path: Path) -> None:
    # a real ONNX model but with neither metadata names nor a manifest
    onnx = pytest.importorskip("onnx", reason="onnx is not part of a trap's install (arm64 check)")

    model = onnx.load(str(PACKAGED_MODELS / "yolov8n-coco-int8-dynamic.onnx"))
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="no class names"):
        Detector(path)


def test_agent_falls_back_to_the_packaged_model(tmp_path: Path) -> None:
    broken = tmp_path / "update.onnx"
    broken.write_bytes(b"half a download")
    config = AgentConfig.model_validate(
        {
            "device_id": "t",
            "source": {"type": "folder", "path": str(tmp_path)},
            "model": {"path": str(broken)},
        }
    )
    counters = AgentCounters()
    detector = load_detector(config, counters)
    assert detector.backend.path == PACKAGED_MODEL / "model.onnx"
    assert detector.info.name == "trapline-nano"
    assert counters.model_load_failures == 1


def test_tflite_prefers_litert_and_reads_embedded_metadata(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"  # no manifest beside it: names come from Ultralytics' metadata
    shutil.copyfile(COCO_STAND_IN, model)
    detector = Detector(model)
    assert detector.backend.key == "litert"
    assert detector.info.category_names == ("person", "vehicle", "animal")
    assert (detector.info.input_height, detector.info.input_width) == (640, 640)


def test_one_tflite_backend_runs_any_interpreter_module(tmp_path: Path) -> None:
    """LiteRT and tflite-runtime are the same class over two interpreter modules, both registered."""
    assert BACKENDS["litert"] is LiteRtBackend
    assert issubclass(BACKENDS["tflite-runtime"], TfliteBackend)
    installed = importlib.util.find_spec("tflite_runtime") is not None
    assert BACKENDS["tflite-runtime"].available() is installed

    class RenamedLiteRt(TfliteBackend):  # what a third packaging of the interpreter would need
        key = "renamed"
        interpreter_module = "ai_edge_litert.interpreter"

    backend = RenamedLiteRt(COCO_STAND_IN, threads=1)
    assert backend.info.input.shape == (1, 640, 640, 3)
    assert backend.info.metadata["names"]  # Ultralytics' embedded metadata was read
    if not installed:
        with pytest.raises(ModelLoadError, match="install one of tflite-runtime"):
            load_backend(COCO_STAND_IN, backend="tflite-runtime")


def test_onnxruntime_threads_sleep_between_runs() -> None:
    """Spinning inference threads took the cores the frame decoder needs (edge.prefetch)."""
    from trapline.edge.backends.onnxruntime import OnnxRuntimeBackend

    backend = load_backend(PACKAGED_MODELS / "yolov8n-coco-int8-dynamic.onnx", threads=2)
    assert isinstance(backend, OnnxRuntimeBackend)
    options = backend._session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
