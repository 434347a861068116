"""The model input in tests: pictures of every kind it must square alike, colours as displayed, and the check that
what reached the model tier is exactly training's square."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from tests.support.images import encode, photo, wide_gamut_icc
from tests.support.photos import photo_bytes

P3_ORANGE, SRGB_OF_P3_ORANGE = (180, 120, 60), (192, 117, 40)  # the second: littlecms's sRGB of the first


def model_input_sources() -> dict[str, bytes]:
    """One picture of every kind the model input must square alike: EXIF turns and mirrors, grey, palette, WebP,
    smaller than the square, a wide-gamut profile, alpha and transparent colours."""
    rgba = Image.new("RGBA", (50, 80), (10, 200, 30, 128))
    rgba.paste((250, 0, 0, 255), (0, 0, 20, 20))
    return {
        "jpeg": photo_bytes((640, 480)),
        "jpeg, EXIF turned": photo_bytes((640, 480), orientation=6),
        "jpeg, mirrored": photo_bytes((300, 500), orientation=2),
        "png RGBA portrait": encode(rgba, "PNG"),
        "grey png": encode(Image.new("L", (90, 40), 77), "PNG"),
        "palette png": encode(Image.new("P", (33, 33), 5), "PNG"),
        "webp": encode(Image.new("RGB", (120, 90), (40, 50, 60)), "WEBP"),
        "smaller than the square": photo_bytes((40, 32)),
        "jpeg, wide-gamut profile": encode(photo(640, 480, seed=3), "JPEG", icc_profile=wide_gamut_icc()),
        "png, transparent colour": encode(transparent_colour_rgb(), "PNG", transparency=(0, 0, 0)),
        "palette png, transparent entry": encode(Image.new("P", (40, 32), 0), "PNG", transparency=0),
    }


def transparent_colour_rgb() -> Image.Image:
    image = Image.new("RGB", (64, 48), (0, 0, 0))  # black: the PNG's transparent colour
    image.paste((200, 40, 90), (10, 10, 40, 30))
    return image


def flat_png(colour: tuple[int, int, int], **save: object) -> bytes:
    """A 64x48 PNG of one colour (``save``: an ICC profile, a transparent colour...)."""
    return encode(Image.new("RGB", (64, 48), colour), "PNG", **save)


def centre(square: np.ndarray) -> tuple[int, ...]:
    """The colour at the middle of a picture, away from any letterbox padding."""
    return tuple(int(v) for v in square[square.shape[0] // 2, square.shape[1] // 2])


def assert_model_input(images: list[bytes], squares: list[Any]) -> None:
    """What reached the tier: BMP squares with exactly these pixels."""
    assert len(images) == len(squares)
    for data, square in zip(images, squares, strict=True):
        assert data.startswith(b"BM")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "BMP" and image.mode == "RGB" and image.size == square.shape[:2]
            assert np.array_equal(np.asarray(image), square)
