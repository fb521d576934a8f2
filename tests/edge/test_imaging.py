from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import SAMPLES
from trapline.edge.imaging import BadImageError, decode_image, image_format_and_size, is_night

MAX = 60_000_000


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def test_reads_size_from_the_header() -> None:
    assert image_format_and_size(_jpeg(64, 48)) == ("jpeg", 64, 48)
    ok, png = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint8))
    assert image_format_and_size(png.tobytes()) == ("png", 7, 5)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file", "not a JPEG or PNG"),
        (_jpeg()[:200], "JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt PNG"),
    ],
)
def test_bad_files_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadImageError, match=reason):
        decode_image(data, MAX)


def test_refuses_huge_images_before_decoding() -> None:
    data = _jpeg(64, 48)
    with pytest.raises(BadImageError, match="too large"):
        decode_image(data, max_pixels=64 * 48 - 1)


def test_decodes_a_real_photo_and_flags_night() -> None:
    night = decode_image((SAMPLES / "buow-IMG_8968.jpg").read_bytes(), MAX)  # IR frame
    day = decode_image((SAMPLES / "squirrel-frame105534.jpg").read_bytes(), MAX)
    assert night.shape == (1536, 2048, 3)
    assert is_night(night) and not is_night(day)


def test_night_flag_agrees_with_the_dataset_labels(camtrap: Path) -> None:
    rows = [json.loads(line) for line in (camtrap / "metadata.jsonl").read_text().splitlines()]
    labelled = [r for r in rows if r["decodes"]]
    disagree = [
        r["file"]
        for r in labelled
        if is_night(decode_image((camtrap / r["file"]).read_bytes(), MAX)) != r["grayscale"]
    ]
    assert len(labelled) > 100
    assert disagree == []


def test_trailer_after_the_end_marker_is_fine_but_a_cut_scan_is_not() -> None:
    jpeg = _jpeg(320, 240)
    # some trail cameras append ~6 KB of their own data, or a preview image, after the main image
    assert decode_image(jpeg + b"\x00CAMERA-TRAILER" * 500, MAX).shape == (240, 320, 3)
    with pytest.raises(BadImageError, match="truncated JPEG"):
        decode_image(jpeg[:-2], MAX)


def test_every_real_photo_decodes_and_the_corrupt_one_does_not(camtrap: Path) -> None:
    rows = [json.loads(line) for line in (camtrap / "metadata.jsonl").read_text().splitlines()]
    outcome = {}
    for row in rows:
        try:
            decode_image((camtrap / row["file"]).read_bytes(), MAX)
            outcome[row["file"]] = True
        except BadImageError:
            outcome[row["file"]] = False
    assert outcome == {row["file"]: row["decodes"] for row in rows}
