"""Square crops: centred on the box, side = its longer side, inside the picture, padded if needed."""

from __future__ import annotations

import numpy as np
import pytest

from trapline.server.clustering.crops import PAD_RGB, Window, cut_square, square_window
from trapline.server.clustering.extractors.base import imagenet_tensor


def test_window_is_centred_square_of_the_longer_side() -> None:
    window = square_window((0.4, 0.4, 0.1, 0.2), 1000, 500)  # 100 x 100 px box... 0.2*500 = 100
    assert window == Window(left=400, top=200, side=100)
    tall = square_window((0.5, 0.2, 0.05, 0.5), 1000, 1000)  # 50 x 500 px
    assert tall.side == 500 and tall.left == 275 and tall.top == 200


def test_window_is_clamped_inside_the_picture_and_padded_only_when_larger() -> None:
    corner = square_window((0.0, 0.0, 0.1, 0.3), 1000, 1000)  # 100 x 300 at the corner
    assert (corner.left, corner.top, corner.side) == (0, 0, 300)
    wide = square_window((0.0, 0.1, 1.0, 0.5), 800, 400)  # the square (800) is taller than the picture
    assert wide.side == 800 and wide.left == 0 and wide.top == -200


def test_cut_pads_with_the_imagenet_mean_and_resizes() -> None:
    image = np.full((400, 800, 3), 255, np.uint8)
    crop = cut_square(image, square_window((0.0, 0.1, 1.0, 0.5), 800, 400))
    assert crop.shape == (224, 224, 3)
    assert tuple(crop[0, 112]) == PAD_RGB  # the padding above the picture
    assert tuple(crop[112, 112]) == (255, 255, 255)
    padding = imagenet_tensor(crop[None, :2, :2])[0]
    assert np.abs(padding).max() < 0.02  # the pad colour normalises to about zero


def test_a_window_outside_the_picture_is_an_error() -> None:
    from trapline.server.clustering.crops import CropError

    with pytest.raises(CropError):
        cut_square(np.zeros((10, 10, 3), np.uint8), Window(50, 50, 5))
