"""The model tier's decode of what the front sends (pzone_model.runtime): a square of the model's side is taken as
it is, on the event loop; anything else (turned, not RGB, with a colour profile, another size) takes the full path to
training's square; a truncated square is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pzone.preprocess import load_square, model_input_bmp
from pzone_model.runtime import BadImage, decode_image, decode_square
from tests.support.images import encode, wide_gamut_icc
from tests.support.model_input import P3_ORANGE, SRGB_OF_P3_ORANGE, centre
from tests.support.photos import photo_bytes


@pytest.mark.unit
def test_a_square_with_an_exif_turn_is_still_turned() -> None:
    picture = Image.new("RGB", (32, 32), (0, 0, 0))
    picture.paste((255, 255, 255), (0, 0, 16, 32))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6
    for data in (encode(picture, "PNG", exif=exif), encode(picture, "JPEG", exif=exif, quality=100)):
        got = decode_image(data, 32, 10**6)
        assert np.array_equal(got, load_square(io.BytesIO(data), 32))
        assert got[:8].mean() > 200 and got[24:].mean() < 50  # turned: the white half is now on top


@pytest.mark.unit
@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("L", (32, 32), 90), "PNG"),
        encode(Image.new("RGBA", (32, 32), (1, 2, 3, 0)), "PNG"),
        encode(Image.new("RGB", (32, 32), (9, 8, 7)), "JPEG"),
        encode(Image.new("RGB", (32, 16), (9, 8, 7)), "PNG"),
    ],
    ids=["grey", "rgba", "jpeg", "not square"],
)
def test_squares_of_other_kinds_take_the_full_path(data: bytes) -> None:
    got = decode_image(data, 32, 10**6)
    assert got.shape == (32, 32, 3) and np.array_equal(got, load_square(io.BytesIO(data), 32))


@pytest.mark.unit
@pytest.mark.parametrize("cut", [60, 200, 1000])
def test_a_truncated_square_is_refused(cut: int) -> None:
    data = model_input_bmp(io.BytesIO(photo_bytes()), 32)
    with pytest.raises(BadImage) as info:
        decode_image(data[:cut], 32, 10**6)
    assert info.value.code == "not_an_image"


@pytest.mark.unit
def test_the_event_loop_decode_takes_only_squares() -> None:
    """``decode_square`` (the tier's event loop): squares of the model's side decoded, header refusals raised, the
    rest left for the thread (None)."""
    photo = photo_bytes((640, 480))
    square = model_input_bmp(io.BytesIO(photo), 32)
    got = decode_square(square, 32, 10**6)
    assert got is not None and np.array_equal(got, load_square(io.BytesIO(photo), 32))
    assert decode_square(photo, 32, 10**6) is None  # a photo: letterboxed in the thread
    assert decode_square(square, 48, 10**6) is None  # another side
    assert decode_square(encode(Image.new("L", (32, 32)), "PNG"), 32, 10**6) is None  # not RGB
    exif = Image.Exif()
    exif[0x0112] = 3
    turned = encode(Image.new("RGB", (32, 32)), "PNG", exif=exif)
    assert decode_square(turned, 32, 10**6) is None  # a turn to apply
    for data, code in (
        (b"", "empty"),
        (b"junk", "not_an_image"),
        (encode(Image.new("L", (2000, 2000)), "PNG"), "too_many_pixels"),
    ):
        with pytest.raises(BadImage) as info:
            decode_square(data, 32, 10**6)
        assert info.value.code == code
    with pytest.raises(BadImage) as info:
        decode_square(square[:200], 32, 10**6)  # a truncated square: refused, not left for later
    assert info.value.code == "not_an_image"


@pytest.mark.unit
def test_the_tier_converts_a_square_that_has_a_profile() -> None:
    """The tier takes an RGB square as it is only when it has no colour profile and no transparent colour."""
    square_with_profile = encode(Image.new("RGB", (32, 32), P3_ORANGE), "PNG", icc_profile=wide_gamut_icc())
    decoded = decode_image(square_with_profile, 32, 10**7)
    assert np.array_equal(decoded, load_square(io.BytesIO(square_with_profile), 32))
    assert np.abs(np.subtract(centre(decoded), SRGB_OF_P3_ORANGE)).max() <= 1
    assert decode_square(square_with_profile, 32, 10**7) is None  # off the event loop: it needs the full path
    plain = encode(Image.new("RGB", (32, 32), P3_ORANGE), "PNG")
    assert decode_square(plain, 32, 10**7) is not None
