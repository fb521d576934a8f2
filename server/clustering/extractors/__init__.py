"""Feature extractors, one module each, picked by key from the settings."""

from __future__ import annotations

from trapline.model_source import resolve_model
from trapline.server.clustering.extractors.base import FeatureExtractor, WeightsMissingError
from trapline.server.core.config import ServerSettings

__all__ = ["EXTRACTOR_KEYS", "FeatureExtractor", "WeightsMissingError", "make_extractor"]

EXTRACTOR_KEYS = ("resnet152", "yolo-backbone")


def make_extractor(
    settings: ServerSettings,
    kind: str | None = None,
    runtime: str | None = None,
    random_seed: int | None = None,
    threads: int | None = None,
) -> FeatureExtractor:
    """The configured extractor (or `kind`/`runtime`); `random_seed` builds ResNet-152 with random
    weights (tests of the mechanics only)."""
    kind = kind or settings.feature_extractor
    runtime = runtime or settings.feature_runtime
    cache = settings.learning_dir / "extractors"
    if kind == "yolo-backbone":
        from trapline.server.clustering.extractors.yolo_backbone import YoloBackbone

        return YoloBackbone(
            resolve_model(settings.inference_model, settings.release_keyring).path, cache, threads
        )
    if kind != "resnet152":
        raise ValueError(f"unknown feature extractor {kind!r}; known: {', '.join(EXTRACTOR_KEYS)}")
    from trapline.server.clustering.extractors.resnet152 import OnnxResNet152, TorchResNet152

    weights = settings.resnet152_weights_path
    if runtime == "torch":
        return TorchResNet152(weights, random_seed, threads)
    return OnnxResNet152(weights, cache, random_seed, threads)
