"""What the web front sends the model tier for a photo: the photo worker's model input, made from the image it
decoded for the derivatives, near training's square (``pzone_api.images``); and the client asking at the side the
answering model takes (``pzone_api.model_tier_client``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pzone.preprocess import load_square, model_input_bmp
from pzone_api.images import inspect_and_derive
from pzone_api.model_tier_client import ModelInput, classify_photos
from pzone_api.settings import Settings
from pzone_model.runtime import decode_image
from tests.support.images import wide_gamut_icc
from tests.support.model_input import (
    P3_ORANGE,
    SRGB_OF_P3_ORANGE,
    assert_model_input,
    centre,
    flat_png,
    model_input_sources,
)
from tests.support.model_tier import ModelTierStandIn
from tests.support.photos import photo_bytes


def model_input_of_file(path: Path) -> ModelInput:
    return lambda size: model_input_bmp(path, size)


# --- the photo worker's model input -----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("name", list(model_input_sources()))
@pytest.mark.parametrize("size", [32, 96])
def test_the_workers_model_input_is_near_trainings_square(name: str, size: int) -> None:
    """The photo worker's input comes from the image it decoded for the derivatives (one decode, not two): within
    a fraction of a grey level of training's square of the original on average, orientation, transparency (on
    white) and colour profiles (to sRGB) included."""
    data = model_input_sources()[name]
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


# --- colours as displayed: the same in the worker's derivatives as in training's square --------------------------


@pytest.mark.unit
def test_the_derivatives_show_the_same_colours_as_the_square() -> None:
    data = flat_png(P3_ORANGE, icc_profile=wide_gamut_icc())
    _, derivatives = inspect_and_derive(
        data, declared_content_type=None, max_pixels=10**8, max_side=20_000, model_size=32
    )
    with Image.open(io.BytesIO(derivatives["thumb"])) as thumb:
        assert "icc_profile" not in thumb.info  # stored in sRGB, so no profile is needed
        shown = np.asarray(thumb.convert("RGB"))
    assert np.abs(np.subtract(centre(shown), SRGB_OF_P3_ORANGE)).max() <= 3  # JPEG
    with Image.open(io.BytesIO(derivatives["model"])) as model:
        assert np.abs(np.subtract(centre(np.asarray(model)), SRGB_OF_P3_ORANGE)).max() <= 1
