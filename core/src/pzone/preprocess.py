"""The one image preprocessing that training and serving share: decode, orient, letterbox to a square.

The ``prepare`` stage, the model tier and the web front's model inputs all letterbox with this code, so the tilt
geometry is never distorted: the whole photo is fitted into size×size keeping its aspect ratio and the rest is
padded. Needs Pillow and numpy (the ``cli`` extra of pzone-core, and every package that trains or serves);
:func:`model_input_bmp` and :func:`model_input_of_image`, which the web front calls, need Pillow only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

PAD_VALUE = 0
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
    """An opened, not yet decoded image → the oriented, letterboxed size×size RGB image.

    JPEG draft mode lets the decoder scale down by 1/2..1/8 in the DCT (much faster), to the smallest scale whose
    longer side is still at least ``size``; the letterbox then resizes by less than 2× with an antialiasing filter.
    A 12 MP photo decodes at 1/8 either way; a 640×480 one at 1/4 (about half the CPU of decoding it at 1/2, with a
    mean difference of 0.35 grey levels in the result).
    """
    from PIL import ImageOps

    image.draft("RGB", (size, size))
    upright = ImageOps.exif_transpose(image)
    return letterbox_image(upright, size)
