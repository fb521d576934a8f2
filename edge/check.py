"""`trapline edge check`: prove on the trap that config and model work, before leaving the site."""

from __future__ import annotations

import time
from pathlib import Path

from trapline.edge.agent import AgentCounters, load_detector
from trapline.edge.backends import ModelLoadError
from trapline.edge.config import PACKAGED_SAMPLES, AgentConfig, ConfigError, load_config
from trapline.edge.imaging import BadImageError, decode_image
from trapline.edge.ota.updater import load_installed


def run_check(config_path: Path, image_path: Path | None) -> int:
    """Print what one frame yields; exit code 0 when all is well (CLI output, hence print)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"FAIL: {exc}")
        return 1
    return check_config(config, str(config_path), image_path)


def check_config(config: AgentConfig, where: str, image_path: Path | None) -> int:
    """`run_check` for a config already loaded (provisioning checks what it has just written)."""
    try:
        started = time.perf_counter()
        # what the agent would run: a model an update installed, else the configured one
        detector = load_installed(config) or load_detector(config, AgentCounters())
        load_ms = (time.perf_counter() - started) * 1000
    except (ConfigError, ModelLoadError) as exc:
        print(f"FAIL: {exc}")
        return 1
    info = detector.info
    print(f"config   {where}: device {config.device_id}, source {config.source.type}")
    print(
        f"model    {info.name} v{info.version} ({detector.backend.path.name}, {detector.backend.key},"
        f" {info.input_width}x{info.input_height}), loaded and warmed up in {load_ms:.0f} ms"
    )
    image_path = image_path or sorted(PACKAGED_SAMPLES.glob("*.jpg"))[0]
    try:
        image = decode_image(image_path.read_bytes(), config.max_image_pixels)
    except (OSError, BadImageError) as exc:
        print(f"FAIL: {image_path}: {exc}")
        return 1
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        result = detector.detect(image)
        timings.append((time.perf_counter() - started) * 1000)
    print(f"frame    {image_path.name} ({image.shape[1]}x{image.shape[0]})")
    print(f"latency  {min(timings):.1f} ms per frame (inference {result.inference_ms:.1f} ms)")
    if not result.detections:
        print("found    nothing above the threshold")
    for det in result.detections:
        x, y, w, h = det.bbox
        print(f"found    {det.category:8s} conf {det.conf:.2f}  bbox x={x:.3f} y={y:.3f} w={w:.3f} h={h:.3f}")
    return 0
