"""Everything the trap must know about a model to run it, gathered once at load time.

One source, never a mix: the manifest that came with the model (a bundle's verified
`manifest.json`; for an unbundled development model only, a `<model>.json` sidecar: see
trapline.model_source), else the metadata Ultralytics embeds in ONNX/TFLite exports. Nothing is
read from the folder here: a file dropped beside a bundle cannot speak for it.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from typing import Any

from trapline.contracts import Category, ModelRef, as_category
from trapline.manifest import Thresholds
from trapline.model_source import ModelSource

log = logging.getLogger(__name__)

# COCO classes that mean something at a camera trap; every other COCO class is dropped.
COCO_CATEGORIES: dict[str, Category] = {
    "person": "person",
    **{
        name: "vehicle"
        for name in ("bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat")
    },
    **{
        name: "animal"
        for name in (
            "bird",
            "cat",
            "dog",
            "horse",
            "sheep",
            "cow",
            "elephant",
            "bear",
            "zebra",
            "giraffe",
        )
    },
}


def _literal(value: Any) -> Any:
    """Ultralytics stores Python reprs ("{0: 'person'}", "[640, 640]") as metadata strings."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    input_height: int
    input_width: int
    class_names: tuple[str, ...]
    categories: tuple[Category | None, ...]
    thresholds: Thresholds

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)

    @property
    def category_names(self) -> tuple[str, ...]:
        """The published categories, each once, in class order."""
        return tuple(dict.fromkeys(c for c in self.categories if c is not None))

    @classmethod
    def gather(cls, source: ModelSource, embedded: dict[str, Any], input_shape: tuple[int, ...]) -> ModelInfo:
        model_path = source.path
        manifest = source.manifest
        sha256 = source.sha256  # of the bytes the runtime loaded
        if manifest is not None:
            names = list(manifest.class_names)
            height, width = manifest.input.height, manifest.input.width
            return cls(
                manifest.name,
                manifest.version,
                sha256,
                height,
                width,
                tuple(names),
                manifest.published_categories(),
                manifest.thresholds,
            )
        raw_names = _literal(embedded.get("names"))
        if not isinstance(raw_names, dict) or not raw_names:
            raise ValueError(
                f"{model_path}: no class names in the model's metadata and no manifest beside it"
            )
        names = [str(raw_names[k]) for k in sorted(raw_names, key=int)]
        is_coco = len(names) == 80 and names[0] == "person"
        mapped = [COCO_CATEGORIES.get(n) if is_coco else as_category(n) for n in names]
        imgsz = _literal(embedded.get("imgsz"))
        if isinstance(imgsz, list | tuple) and len(imgsz) == 2:
            height, width = int(imgsz[0]), int(imgsz[1])
        else:  # fall back to the tensor shape, NCHW or NHWC
            nchw = input_shape[1] == 3
            height, width = (input_shape[2], input_shape[3]) if nchw else input_shape[1:3]
        log.info("%s: no manifest, using the model's embedded metadata", model_path.name)
        return cls(
            model_path.stem,
            str(embedded.get("version", "0")),
            sha256,
            height,
            width,
            tuple(names),
            tuple(mapped),
            Thresholds(),
        )
