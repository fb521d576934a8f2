from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import ROOT
from trapline.training.spec import DatasetSpec

SPEC = ROOT / "training" / "datasets" / "camtrap.yaml"


def test_the_shipped_spec_reads_and_resolves_against_the_data_root() -> None:
    spec = DatasetSpec.read(SPEC).resolved(Path("/data"))
    assert [s.name for s in spec.sources] == ["camtrap-dev", "camtrap-train"]
    assert spec.sources[0].images == Path("/data/camtrap-dev/images")
    assert spec.teachers[0].model == Path("/data/../weights/mdlite-yolox-tiny-640.onnx")
    assert "camtrap-train/animl-r_southwest/NW1" in spec.split.test_sites


def test_unknown_fields_duplicate_sources_and_sites_in_two_splits_are_refused() -> None:
    source = {"name": "a", "images": "a"}
    with pytest.raises(ValidationError, match="extra"):
        DatasetSpec.model_validate({"sources": [{**source, "imags": "typo"}]})
    with pytest.raises(ValidationError, match="unique"):
        DatasetSpec.model_validate({"sources": [source, source]})
    with pytest.raises(ValidationError, match="both in test and val"):
        DatasetSpec.model_validate({"sources": [source], "split": {"test_sites": ["x"], "val_sites": ["x"]}})
