"""The model input (pzone.preprocess): training's letterboxed square as an uncompressed BMP, taken by the model
tier's decode as it is; colour profiles converted to sRGB and transparency flattened onto white, as displayed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pzone.preprocess import load_square, model_input_bmp
from pzone_model.runtime import decode_image
from tests.support.images import encode, photo, wide_gamut_icc
from tests.support.model_input import (
    P3_ORANGE,
    SRGB_OF_P3_ORANGE,
    assert_model_input,
    centre,
    flat_png,
    model_input_sources,
)


@pytest.mark.unit
@pytest.mark.parametrize("name", list(model_input_sources()))
@pytest.mark.parametrize("size", [32, 96])
def test_the_model_input_is_trainings_square_losslessly(name: str, size: int) -> None:
    data = model_input_sources()[name]
    square = load_square(io.BytesIO(data), size)
    assert_model_input([model_input_bmp(io.BytesIO(data), size)], [square])
    # The tier decodes it to the very same array, by its shortcut.
    assert np.array_equal(decode_image(model_input_bmp(io.BytesIO(data), size), size, 10**7), square)


@pytest.mark.unit
def test_the_model_input_refuses_what_training_refuses() -> None:
    with pytest.raises(Image.DecompressionBombError):
        model_input_bmp(io.BytesIO(encode(Image.new("L", (9000, 8000)), "PNG")), 32)
    with pytest.raises(OSError):
        model_input_bmp(io.BytesIO(b"not an image"), 32)


@pytest.mark.unit
def test_a_wide_gamut_photo_is_squared_in_srgb() -> None:
    with_profile = load_square(io.BytesIO(flat_png(P3_ORANGE, icc_profile=wide_gamut_icc())), 32)
    without = load_square(io.BytesIO(flat_png(P3_ORANGE)), 32)
    assert centre(without) == P3_ORANGE
    assert np.abs(np.subtract(centre(with_profile), SRGB_OF_P3_ORANGE)).max() <= 1
    assert tuple(int(v) for v in with_profile[0, 0]) == (0, 0, 0)  # the letterbox padding is still black


@pytest.mark.unit
@pytest.mark.parametrize(
    "profile",
    [b"not a profile", b"", "srgb", "lab"],
)
def test_profiles_that_need_no_or_allow_no_conversion_leave_the_colours(profile: object) -> None:
    from PIL import ImageCms

    if profile == "srgb":
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    elif profile == "lab":
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    # a profile that is damaged, sRGB, or not for RGB is no reason to refuse the photo, nor to change it
    assert centre(load_square(io.BytesIO(flat_png(P3_ORANGE, icc_profile=profile)), 32)) == P3_ORANGE


@pytest.mark.unit
@pytest.mark.parametrize(
    "name", ["png RGBA portrait", "png, transparent colour", "palette png, transparent entry"]
)
def test_transparency_is_squared_on_white(name: str) -> None:
    square = load_square(io.BytesIO(model_input_sources()[name]), 96)
    if name == "png RGBA portrait":  # 50 % green over white, not over black
        assert np.abs(np.subtract(centre(square), (132, 227, 142))).max() <= 2
    else:  # a transparent pixel near the picture's top-left corner (the picture spans rows 12-83 of the square)
        assert tuple(int(v) for v in square[16, 4]) == (255, 255, 255)
    assert (
        tuple(int(v) for v in square[2, 48]) == (0, 0, 0) or name == "png RGBA portrait"
    )  # padding stays black


@pytest.mark.unit
def test_one_profile_converts_alike_from_many_threads() -> None:
    """The transform of a profile is built once and shared (the photo worker runs several threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from pzone.preprocess import to_srgb

    pictures = [photo(200, 150, seed=seed) for seed in range(8)]
    alone = [np.asarray(to_srgb(picture, wide_gamut_icc())) for picture in pictures]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: np.asarray(to_srgb(p, wide_gamut_icc())), pictures * 4))
    assert all(np.array_equal(got, alone[i % 8]) for i, got in enumerate(together))
    assert not np.array_equal(alone[0], np.asarray(pictures[0]))  # converted, not passed through
