from __future__ import annotations

import pytest
from pydantic import ValidationError

from trapline.manifest import InputSpec, ModelManifest, Thresholds


def _manifest(**thresholds: object) -> ModelManifest:
    return ModelManifest(
        name="m", version="1", format="onnx", model_file="model.onnx",
        input=InputSpec(height=416, width=416), class_names=["animal", "person", "vehicle"],
        thresholds=Thresholds.model_validate(thresholds),
    )  # fmt: skip


def test_per_class_thresholds_fall_back_to_the_default() -> None:
    manifest = _manifest(conf=0.25, per_class={"animal": 0.41}, target_precision=0.9)
    assert manifest.thresholds.for_class("animal") == 0.41
    assert manifest.thresholds.for_class("vehicle") == 0.25
    assert ModelManifest.model_validate_json(manifest.to_json()) == manifest


def test_a_manifest_without_per_class_thresholds_still_reads() -> None:
    old = _manifest().model_dump(by_alias=True)
    del old["thresholds"]["per_class"], old["thresholds"]["target_precision"]
    assert ModelManifest.model_validate(old).thresholds.per_class == {}


@pytest.mark.parametrize("per_class", [{"animal": 1.5}, {"unicorn": 0.5}])
def test_bad_per_class_thresholds_are_refused(per_class: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        _manifest(per_class=per_class)


def test_thresholds_by_category_cover_every_class_published_as_it() -> None:
    from trapline.edge.model_info import COCO_CATEGORIES

    names = [
        "person",
        "bicycle",
        "car",
        *[f"c{i}" for i in range(3, 14)],
        "bird",
        *[f"c{i}" for i in range(15, 80)],
    ]
    manifest = ModelManifest(
        name="m", version="1", format="onnx", model_file="model.onnx", input=InputSpec(height=416, width=416),
        class_names=names, categories=[COCO_CATEGORIES.get(n) for n in names],
        thresholds=Thresholds(per_class={"animal": 0.5, "car": 0.6}),
    )  # fmt: skip
    assert manifest.thresholds.for_class("bird", "animal") == 0.5
    assert manifest.thresholds.for_class("car", "vehicle") == 0.6  # its own beats its category's
    assert manifest.thresholds.for_class("bicycle", "vehicle") == 0.25
