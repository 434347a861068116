"""The one image preprocessing that training and serving share: decode, orient, colours as displayed, letterbox.

The ``prepare`` stage, the model tier and the web front's model inputs all letterbox with this code, so the tilt
geometry is never distorted: the whole photo is fitted into size×size keeping its aspect ratio and the rest is
padded. Colours are the ones a person sees, as in the photo's derivatives: transparency composited onto white
(:func:`flatten_onto_white`) and an embedded colour profile other than sRGB (Display P3 from phones) converted
to sRGB (:func:`to_srgb`); the photo worker's derivatives use the same two functions. Needs Pillow and numpy (the ``cli`` extra of pzone-core, and every package that trains or serves);
:func:`model_input_bmp` and :func:`model_input_of_image`, which the web front calls, need Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageCms

PAD_VALUE = 0
WHITE = (255, 255, 255)  # what transparency is shown on
MAX_PIXELS = 64_000_000  # a decompression bomb is an error, not a warning


def letterbox(image: Image.Image, size: int, fill: int = PAD_VALUE) -> np.ndarray:
    """Fit the whole picture into size×size keeping its aspect ratio, pad the rest; uint8 RGB (size, size, 3)."""
    import numpy as np

    return np.asarray(letterbox_image(image, size, fill), dtype=np.uint8)


def letterbox_image(image: Image.Image, size: int, fill: int = PAD_VALUE) -> Image.Image:
    """:func:`letterbox` as a Pillow RGB image (no numpy needed)."""
    from PIL import Image

    rgb = image.convert("RGB")
    scale = size / max(rgb.width, rgb.height)
    width, height = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
    resized = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    canvas.paste(resized, ((size - width) // 2, (size - height) // 2))
    return canvas


def load_square(source: Path | str | IO[bytes], size: int) -> np.ndarray:
    """Decode, apply EXIF orientation, letterbox (:func:`square_from_image`). Raises Pillow's errors for an
    unreadable image and ``DecompressionBombError`` past MAX_PIXELS."""
    with _open_checked(source) as image:
        return square_from_image(image, size)


def model_input_bmp(source: Path | str | IO[bytes], size: int) -> bytes:
    """What the web front sends the model tier for a photo: :func:`load_square`'s pixels as an uncompressed BMP.

    Lossless, so the tier decodes exactly the array made here; and uncompressed, because the tier's CPU is the
    scarce one: a 96 px square (27 kB) decodes in about 0.03 ms as BMP, 0.11 ms as a PNG without compression,
    0.25 ms with zlib level 1, 0.6 ms as a 640×480 JPEG with its letterbox. Needs Pillow only. Raises as
    :func:`load_square` does. The photo worker uses :func:`model_input_of_image` on the image it has decoded anyway.
    """
    with _open_checked(source) as image:
        return _bmp(square_image(image, size))


def model_input_of_image(image: Image.Image, size: int) -> bytes:
    """:func:`model_input_bmp` of an image already decoded and oriented (the photo worker's largest derivative):
    about 1 ms, where decoding a 12 MP original again costs ~38 ms. Its pixels differ from training's square of the
    original by a fraction of a grey level on average (another JPEG draft scale and resampling path)."""
    return _bmp(letterbox_image(image, size))


def _bmp(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "BMP")
    return out.getvalue()


@contextmanager
def _open_checked(source: Path | str | IO[bytes]) -> Iterator[Image.Image]:
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with Image.open(source) as image:
        if image.width * image.height > MAX_PIXELS:  # Pillow itself only warns between 1× and 2× its limit
            raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels is over the limit")
        yield image


def square_from_image(image: Image.Image, size: int) -> np.ndarray:
    """An opened, not yet decoded image → uint8 (size, size, 3) (:func:`square_image`'s pixels)."""
    import numpy as np

    return np.asarray(square_image(image, size), dtype=np.uint8)


def square_image(image: Image.Image, size: int) -> Image.Image:
    """An opened, not yet decoded image → the oriented, letterboxed size×size RGB image, in the colours displayed
    (:func:`flatten_onto_white`, :func:`to_srgb`: what the photo worker's derivatives show).

    JPEG draft mode lets the decoder scale down by 1/2..1/8 in the DCT (much faster), to the smallest scale whose
    longer side is still at least ``size``; the letterbox then resizes by less than 2× with an antialiasing filter.
    A 12 MP photo decodes at 1/8 either way; a 640×480 one at 1/4 (about half the CPU of decoding it at 1/2, with a
    mean difference of 0.35 grey levels in the result).
    """
    from PIL import ImageOps

    icc = image.info.get("icc_profile")
    image.draft("RGB", (size, size))
    upright = ImageOps.exif_transpose(image)
    return letterbox_image(to_srgb(flatten_onto_white(upright), icc), size)


def flatten_onto_white(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (an alpha channel, or a palette's or a PNG's transparent colour) composited onto
    white; other modes are converted as Pillow does."""
    from PIL import Image

    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def to_srgb(image: Image.Image, icc: object) -> Image.Image:
    """An RGB image converted from its ICC profile ``icc`` (the bytes of ``info["icc_profile"]``) to sRGB; the same
    image when it has none, an sRGB one, or one that is unusable or not for RGB (a damaged profile is no reason to
    refuse a photo)."""
    if not isinstance(icc, bytes) or not icc or image.mode != "RGB":
        return image
    from PIL import ImageCms

    try:
        transform = _transform_to_srgb(icc)
        if transform is None:
            return image
        converted = ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


@lru_cache(maxsize=16)
def _transform_to_srgb(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    """The transform from this profile to sRGB (None: none needed or possible). Kept: building one costs ~5 ms, and
    a phone puts the same profile in every photo. NOCACHE: no one-pixel cache, so threads may share it."""
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    if source.profile.xcolor_space.strip() != "RGB":
        return None
    if "srgb" in ImageCms.getProfileDescription(source).lower():
        return None
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return ImageCms.buildTransform(source, srgb, "RGB", "RGB", flags=ImageCms.Flags.NOCACHE)
