"""The model bundle's manifest (DESIGN.md, "Model bundle"): what a model is and how to run it.

The trap reads class names, input size, quantization and thresholds from here, so nothing is
guessed at load time. Signing and verification of bundles build on this model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trapline.contracts import RELEASE_VERSION_PATTERN, Category, as_category

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, description="model input height in pixels")
    width: int = Field(gt=0, description="model input width in pixels")
    dtype: Literal["float32", "float16", "int8", "uint8"] = Field("float32", description="input tensor dtype")
    scale: float = Field(0.0, description="input quantization scale (0 when not quantized)")
    zero_point: int = Field(0, description="input quantization zero point")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conf: float = Field(0.25, ge=0.0, le=1.0, description="minimum confidence of a detection")
    iou: float = Field(0.7, ge=0.0, le=1.0, description="NMS IoU threshold")
    max_det: int = Field(300, gt=0, description="most detections kept per frame")
    per_class: dict[str, float] = Field(
        default_factory=dict,
        description="class name, or published category (animal/person/vehicle), -> confidence"
        " threshold chosen on validation data; a class uses its own, else its category's, else `conf`",
    )
    target_precision: float | None = Field(
        None, ge=0.0, le=1.0, description="the validation precision the per-class thresholds were chosen for"
    )

    @field_validator("per_class")
    @classmethod
    def _unit_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"per-class thresholds must lie in [0, 1]: {bad}")
        return value

    def for_class(self, name: str, category: str | None = None) -> float:
        if name in self.per_class:
            return self.per_class[name]
        return self.per_class.get(category or name, self.conf)


class ReferenceDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Category
    conf: float = Field(ge=0.0, le=1.0)
    bbox: tuple[float, float, float, float] = Field(description="[x, y, width, height], normalised")


class ReferenceFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="a picture in the bundle (listed in `files`, so hashed and signed)")
    detections: list[ReferenceDetection] = Field(description="what the model found in it at build time")


class SelfTest(BaseModel):
    """What the model must still find on the trap before it may replace the running one."""

    model_config = ConfigDict(extra="forbid")

    frames: list[ReferenceFrame] = Field(min_length=1)
    conf_tolerance: float = Field(
        0.1, ge=0.0, le=1.0, description="largest confidence difference (runtimes differ a little)"
    )
    min_iou: float = Field(0.7, ge=0.0, le=1.0, description="smallest overlap of a box with its reference")


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: Literal["trapline.bundle/1"] = Field("trapline.bundle/1", alias="schema")
    name: str = Field(min_length=1, description="model name, e.g. trapline-nano")
    version: str = Field(min_length=1, description="release version")
    format: Literal["onnx", "tflite"]
    model_file: str = Field(description="the model file's name inside the bundle")
    input: InputSpec
    class_names: list[str] = Field(min_length=1, description="the model's classes, in index order")
    categories: list[Category | None] | None = Field(
        None,
        description="per class, the published category (animal/person/vehicle) or null to drop it;"
        " omitted: a class named like a category is that category, the others are dropped",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    key_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{16}$", description="id of the release key that signed this manifest"
    )
    provenance: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    self_test: SelfTest | None = Field(
        None, description="reference frames and expected detections a trap checks before switching"
    )
    min_agent_version: str | None = Field(
        None, pattern=RELEASE_VERSION_PATTERN, description="oldest agent that can run this bundle"
    )

    @model_validator(mode="after")
    def _categories_match_classes(self) -> ModelManifest:
        if self.categories is not None and len(self.categories) != len(self.class_names):
            raise ValueError(
                f"categories has {len(self.categories)} entries for {len(self.class_names)} classes"
            )
        known = set(self.class_names) | {c for c in self.published_categories() if c is not None}
        unknown = set(self.thresholds.per_class) - known
        if unknown:
            raise ValueError(f"per-class thresholds for classes the model does not have: {sorted(unknown)}")
        return self

    def published_categories(self) -> tuple[Category | None, ...]:
        """Per class, the category its detections are published as (None: not published)."""
        if self.categories is not None:
            return tuple(self.categories)
        return tuple(as_category(name) for name in self.class_names)

    @classmethod
    def read(cls, path: Path) -> ModelManifest:
        return cls.model_validate_json(path.read_bytes())

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=1).encode()
