"""What the web front sends the model tier for a photo: training's letterboxed square as an uncompressed BMP
(``pzone.preprocess.model_input_bmp``), at the side the answering model takes (``pzone_api.verdicts``), and the
tier's decode taking it as it is (``pzone_model.runtime.decode_image``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pzone.preprocess import load_square, model_input_bmp
from pzone_api.images import inspect_and_derive
from pzone_api.settings import Settings
from pzone_api.verdicts import ModelInput, classify_photos
from pzone_model.runtime import BadImage, decode_image, decode_square
from tests.support.images import photo, wide_gamut_icc
from tests.support.model_tier import ModelTierStandIn
from tests.test_photos import assert_model_input, photo_bytes


def model_input_of_file(path: Path) -> ModelInput:
    return lambda size: model_input_bmp(path, size)


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def sources() -> dict[str, bytes]:
    rgba = Image.new("RGBA", (50, 80), (10, 200, 30, 128))
    rgba.paste((250, 0, 0, 255), (0, 0, 20, 20))
    return {
        "jpeg": photo_bytes((640, 480)),
        "jpeg, EXIF turned": photo_bytes((640, 480), orientation=6),
        "jpeg, mirrored": photo_bytes((300, 500), orientation=2),
        "png RGBA portrait": encoded(rgba, "PNG"),
        "grey png": encoded(Image.new("L", (90, 40), 77), "PNG"),
        "palette png": encoded(Image.new("P", (33, 33), 5), "PNG"),
        "webp": encoded(Image.new("RGB", (120, 90), (40, 50, 60)), "WEBP"),
        "smaller than the square": photo_bytes((20, 12)),
        "jpeg, wide-gamut profile": encoded(photo(640, 480, seed=3), "JPEG", icc_profile=wide_gamut_icc()),
        "png, transparent colour": encoded(transparent_colour_rgb(), "PNG", transparency=(0, 0, 0)),
        "palette png, transparent entry": encoded(Image.new("P", (40, 30), 0), "PNG", transparency=0),
    }


def transparent_colour_rgb() -> Image.Image:
    image = Image.new("RGB", (64, 48), (0, 0, 0))  # black: the PNG's transparent colour
    image.paste((200, 40, 90), (10, 10, 40, 30))
    return image


# --- the model input --------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("name", list(sources()))
@pytest.mark.parametrize("size", [32, 96])
def test_the_model_input_is_trainings_square_losslessly(name: str, size: int) -> None:
    data = sources()[name]
    square = load_square(io.BytesIO(data), size)
    assert_model_input([model_input_bmp(io.BytesIO(data), size)], [square])
    # The tier decodes it to the very same array, by its shortcut.
    assert np.array_equal(decode_image(model_input_bmp(io.BytesIO(data), size), size, 10**7), square)


@pytest.mark.unit
@pytest.mark.parametrize("name", list(sources()))
@pytest.mark.parametrize("size", [32, 96])
def test_the_workers_model_input_is_near_trainings_square(name: str, size: int) -> None:
    """The photo worker's input comes from the image it decoded for the derivatives (one decode, not two): within
    a fraction of a grey level of training's square of the original on average, orientation, transparency (on
    white) and colour profiles (to sRGB) included."""
    data = sources()[name]
    _, derivatives = inspect_and_derive(
        data, declared_content_type=None, max_pixels=10**8, max_side=20_000, model_size=size
    )
    made = derivatives["model"]
    with Image.open(io.BytesIO(made)) as image:
        assert image.format == "BMP" and image.mode == "RGB" and image.size == (size, size)
        got = np.asarray(image).astype(int)
    square = load_square(io.BytesIO(data), size).astype(int)
    assert np.abs(got - square).mean() < 1.5
    assert np.abs(got - square).max() < 64  # no shift, turn or scale error: those move whole edges
    assert np.array_equal(decode_image(made, size, 10**7), got)  # the tier takes it as it is
    # Without model_size, nothing extra is made (nothing extra could be stored by mistake).
    _, plain = inspect_and_derive(data, declared_content_type=None, max_pixels=10**8, max_side=20_000)
    assert set(plain) == {"thumb", "preview"}


@pytest.mark.unit
def test_the_model_input_refuses_what_training_refuses() -> None:
    with pytest.raises(Image.DecompressionBombError):
        model_input_bmp(io.BytesIO(encoded(Image.new("L", (9000, 8000)), "PNG")), 32)
    with pytest.raises(OSError):
        model_input_bmp(io.BytesIO(b"not an image"), 32)


# --- the tier's shortcut ----------------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_square_with_an_exif_turn_is_still_turned() -> None:
    picture = Image.new("RGB", (32, 32), (0, 0, 0))
    picture.paste((255, 255, 255), (0, 0, 16, 32))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6
    for data in (encoded(picture, "PNG", exif=exif), encoded(picture, "JPEG", exif=exif, quality=100)):
        got = decode_image(data, 32, 10**6)
        assert np.array_equal(got, load_square(io.BytesIO(data), 32))
        assert got[:8].mean() > 200 and got[24:].mean() < 50  # turned: the white half is now on top


@pytest.mark.unit
@pytest.mark.parametrize(
    "data",
    [
        encoded(Image.new("L", (32, 32), 90), "PNG"),
        encoded(Image.new("RGBA", (32, 32), (1, 2, 3, 0)), "PNG"),
        encoded(Image.new("RGB", (32, 32), (9, 8, 7)), "JPEG"),
        encoded(Image.new("RGB", (32, 16), (9, 8, 7)), "PNG"),
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
    assert decode_square(encoded(Image.new("L", (32, 32)), "PNG"), 32, 10**6) is None  # not RGB
    exif = Image.Exif()
    exif[0x0112] = 3
    turned = encoded(Image.new("RGB", (32, 32)), "PNG", exif=exif)
    assert decode_square(turned, 32, 10**6) is None  # a turn to apply
    for data, code in (
        (b"", "empty"),
        (b"junk", "not_an_image"),
        (encoded(Image.new("L", (2000, 2000)), "PNG"), "too_many_pixels"),
    ):
        with pytest.raises(BadImage) as info:
            decode_square(data, 32, 10**6)
        assert info.value.code == code
    with pytest.raises(BadImage) as info:
        decode_square(square[:200], 32, 10**6)  # a truncated square: refused, not left for later
    assert info.value.code == "not_an_image"


# --- the client: the side the tier's model takes -------------------------------------------------------------------


@pytest.fixture
def stand_in() -> Iterator[ModelTierStandIn]:
    tier = ModelTierStandIn()  # its own port: the client's size memory starts empty for it
    tier.start()
    try:
        yield tier
    finally:
        tier.stop()


def originals(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"photo-{i}.jpg"
        path.write_bytes(photo_bytes((400 + 40 * i, 300), orientation=6 if i % 2 else None))
        paths.append(path)
    return paths


def settings_for(tier: ModelTierStandIn) -> Settings:
    return Settings(model_tier_url=tier.url, model_tier_timeout_s=5.0)


@pytest.mark.integration
def test_the_client_learns_the_models_side_and_asks_again_once(
    stand_in: ModelTierStandIn, tmp_path: Path
) -> None:
    stand_in.image_size = 48  # not the first guess (96)
    paths = originals(tmp_path, 3)
    settings = settings_for(stand_in)

    verdicts = classify_photos(settings, [model_input_of_file(p) for p in paths[:2]])
    assert verdicts is not None and [v and (v.label, v.image_size) for v in verdicts] == [("upright", 48)] * 2
    # The first request guessed 96; the answer said 48, so both went again at 48, in one request.
    assert [len(images) for images in stand_in.received] == [2, 2]
    assert_model_input(stand_in.received[0], [load_square(p, 96) for p in paths[:2]])
    assert_model_input(stand_in.received[1], [load_square(p, 48) for p in paths[:2]])

    # Remembered: the next photo goes at 48 straight away.
    assert classify_photos(settings, [model_input_of_file(paths[2])]) is not None
    assert len(stand_in.received) == 3
    assert_model_input(stand_in.received[2], [load_square(paths[2], 48)])

    # A rollout to a model of another side: corrected by the first answer, then remembered.
    stand_in.image_size, stand_in.model_version = 64, "pzone-tilt/9"
    again = classify_photos(settings, [model_input_of_file(paths[0])])
    assert again is not None and again[0] is not None and again[0].model_version == "pzone-tilt/9"
    assert_model_input(stand_in.received[-1], [load_square(paths[0], 64)])
    assert len(stand_in.received) == 5
    classify_photos(settings, [model_input_of_file(paths[1])])
    assert len(stand_in.received) == 6


@pytest.mark.integration
def test_a_tier_that_does_not_say_its_side_is_answered_once(
    stand_in: ModelTierStandIn, tmp_path: Path
) -> None:
    (path,) = originals(tmp_path, 1)
    verdicts = classify_photos(settings_for(stand_in), [model_input_of_file(path)])
    assert verdicts is not None and verdicts[0] is not None and verdicts[0].image_size is None
    assert len(stand_in.received) == 1
    assert_model_input(stand_in.received[0], [load_square(path, 96)])


@pytest.mark.integration
@pytest.mark.parametrize("size", [0, 3, -5, 10_000, "96", 96.5, True, None])
def test_a_nonsense_side_is_ignored(stand_in: ModelTierStandIn, tmp_path: Path, size: object) -> None:
    stand_in.image_size = size  # type: ignore[assignment]
    (path,) = originals(tmp_path, 1)
    verdicts = classify_photos(settings_for(stand_in), [model_input_of_file(path)])
    assert verdicts is not None and verdicts[0] is not None and verdicts[0].image_size is None
    assert len(stand_in.received) == 1  # never asked again at a made-up side


@pytest.mark.integration
def test_a_photo_whose_input_cannot_be_made_stays_pending_alone(
    stand_in: ModelTierStandIn, tmp_path: Path
) -> None:
    stand_in.image_size = 96
    good = originals(tmp_path, 2)
    gone, broken = tmp_path / "gone.jpg", tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo any more")
    inputs = [model_input_of_file(p) for p in (good[0], gone, broken, good[1])]
    verdicts = classify_photos(settings_for(stand_in), inputs)
    assert verdicts is not None
    assert [v is not None for v in verdicts] == [True, False, False, True]
    assert_model_input(stand_in.received[0], [load_square(p, 96) for p in good])
    # Nothing could be made: nothing is sent.
    assert classify_photos(settings_for(stand_in), [model_input_of_file(gone)]) == [None]
    assert len(stand_in.received) == 1


@pytest.mark.integration
def test_no_tier_no_verdicts(tmp_path: Path) -> None:
    (path,) = originals(tmp_path, 1)
    away = ModelTierStandIn()  # never started
    assert classify_photos(settings_for(away), [model_input_of_file(path)]) is None
    assert classify_photos(Settings(model_tier_url=None), [model_input_of_file(path)]) is None
    assert classify_photos(settings_for(away), []) is None


# --- colours as displayed: the same in training, the worker's derivatives and the tier ----------------------------
P3_ORANGE, SRGB_OF_P3_ORANGE = (180, 120, 60), (192, 117, 40)  # the second: littlecms's sRGB of the first


def flat(colour: tuple[int, int, int], **save: object) -> bytes:
    return encoded(Image.new("RGB", (64, 48), colour), "PNG", **save)


def centre(square: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in square[square.shape[0] // 2, square.shape[1] // 2])


@pytest.mark.unit
def test_a_wide_gamut_photo_is_squared_in_srgb() -> None:
    with_profile = load_square(io.BytesIO(flat(P3_ORANGE, icc_profile=wide_gamut_icc())), 32)
    without = load_square(io.BytesIO(flat(P3_ORANGE)), 32)
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
    assert centre(load_square(io.BytesIO(flat(P3_ORANGE, icc_profile=profile)), 32)) == P3_ORANGE


@pytest.mark.unit
@pytest.mark.parametrize(
    "name", ["png RGBA portrait", "png, transparent colour", "palette png, transparent entry"]
)
def test_transparency_is_squared_on_white(name: str) -> None:
    square = load_square(io.BytesIO(sources()[name]), 96)
    if name == "png RGBA portrait":  # 50 % green over white, not over black
        assert np.abs(np.subtract(centre(square), (132, 227, 142))).max() <= 2
    else:  # a transparent pixel near the picture's top-left corner (the picture spans rows 12-83 of the square)
        assert tuple(int(v) for v in square[16, 4]) == (255, 255, 255)
    assert (
        tuple(int(v) for v in square[2, 48]) == (0, 0, 0) or name == "png RGBA portrait"
    )  # padding stays black


@pytest.mark.unit
def test_the_derivatives_show_the_same_colours_as_the_square() -> None:
    data = flat(P3_ORANGE, icc_profile=wide_gamut_icc())
    _, derivatives = inspect_and_derive(
        data, declared_content_type=None, max_pixels=10**8, max_side=20_000, model_size=32
    )
    with Image.open(io.BytesIO(derivatives["thumb"])) as thumb:
        assert "icc_profile" not in thumb.info  # stored in sRGB, so no profile is needed
        shown = np.asarray(thumb.convert("RGB"))
    assert np.abs(np.subtract(centre(shown), SRGB_OF_P3_ORANGE)).max() <= 3  # JPEG
    with Image.open(io.BytesIO(derivatives["model"])) as model:
        assert np.abs(np.subtract(centre(np.asarray(model)), SRGB_OF_P3_ORANGE)).max() <= 1


@pytest.mark.unit
def test_the_tier_converts_a_square_that_has_a_profile() -> None:
    """The tier takes an RGB square as it is only when it has no colour profile and no transparent colour."""
    square_with_profile = encoded(Image.new("RGB", (32, 32), P3_ORANGE), "PNG", icc_profile=wide_gamut_icc())
    decoded = decode_image(square_with_profile, 32, 10**7)
    assert np.array_equal(decoded, load_square(io.BytesIO(square_with_profile), 32))
    assert np.abs(np.subtract(centre(decoded), SRGB_OF_P3_ORANGE)).max() <= 1
    assert decode_square(square_with_profile, 32, 10**7) is None  # off the event loop: it needs the full path
    plain = encoded(Image.new("RGB", (32, 32), P3_ORANGE), "PNG")
    assert decode_square(plain, 32, 10**7) is not None


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
