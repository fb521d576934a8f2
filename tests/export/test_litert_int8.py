"""LiteRT INT8 recipes: which tensors each keeps in float (names from Ultralytics' litert-torch export)."""

from __future__ import annotations

import re

import pytest

from trapline.export.litert_int8 import DEFAULT_RECIPE, HEAD, HEAD_DECODE, HEAD_LAST_CONV, RECIPES, STEM

P = "ultralytics.utils.export.engine._NormalizeCoords/ultralytics.nn.tasks.DetectionModel_model/"
NAMES = {
    "stem": P + "ultralytics.nn.modules.conv.Conv_0/torch.nn.modules.conv.Conv2d_conv;4",
    "backbone": P + "ultralytics.nn.modules.block.C2f_2/ultralytics.nn.modules.conv.Conv_cv1/torch.nn.modules.conv.Conv2d_conv;",
    "branch": P + "ultralytics.nn.modules.head.Detect_22/torch.nn.modules.container.Sequential_1/ultralytics.nn.modules.conv.Conv_0/torch.nn.modules.activation.SiLU_act;1",
    "last conv": P + "ultralytics.nn.modules.head.Detect_22/torch.nn.modules.container.Sequential_2/torch.nn.modules.conv.Conv2d_2;6",
    "dfl": P + "ultralytics.nn.modules.head.Detect_22/ultralytics.nn.modules.block.DFL_dfl;4",
    "anchors": P + "ultralytics.nn.modules.head.Detect_22;24",
    "output": "serving_default_output_0_output",
}  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        (HEAD_DECODE, {"dfl", "anchors", "output"}),
        (HEAD_LAST_CONV, {"last conv"}),
        (HEAD, {"branch", "last conv", "dfl", "anchors"}),
        (STEM, {"stem"}),
    ],
)
def test_recipe_patterns_pick_exactly_their_layers(pattern: str, matches: set[str]) -> None:
    assert {k for k, name in NAMES.items() if re.fullmatch(pattern, name)} == matches


def test_every_recipe_quantizes_everything_first_and_the_default_exists() -> None:
    assert DEFAULT_RECIPE in RECIPES
    for rules in RECIPES.values():
        assert (
            rules[0]["regex"] == ".*" and rules[0]["op_config"]["activation_tensor_config"]["num_bits"] == 8
        )
