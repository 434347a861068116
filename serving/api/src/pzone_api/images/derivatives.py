"""The derivatives of a decoded photo: JPEG thumbnail and preview, and the model tier's input square.

Each is oriented as displayed, in sRGB, flattened onto white, with no metadata at all.
"""

from __future__ import annotations

import io
import types
from collections.abc import Mapping
from typing import Final

from PIL import Image

from pzone.preprocess import flatten_onto_white, model_input_of_image, to_srgb

DEFAULT_SIZES: Final[Mapping[str, int]] = types.MappingProxyType({"thumb": 256, "preview": 1024})
DEFAULT_QUALITY: Final = 85

# Resampling for derivatives. BICUBIC after JPEG DCT scaling and Image.reduce (reducing_gap) is what
# Image.thumbnail does; LANCZOS costs about 25 % more time per photo for a difference that is hard to see.
_RESAMPLE: Final = Image.Resampling.BICUBIC
_REDUCING_GAP: Final = 2.0

# The same table as PIL.ImageOps.exif_transpose.
TRANSPOSE_FOR_ORIENTATION: Final[Mapping[int, Image.Transpose]] = types.MappingProxyType(
    {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }
)
# Orientations whose displayed width is the stored height.
SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})


def fit_within(size: tuple[int, int], box: int) -> tuple[int, int]:
    """``size`` scaled down (never up) to fit in ``box`` x ``box``, keeping the aspect ratio."""
    width, height = size
    if width <= box and height <= box:
        return width, height
    if width >= height:
        return box, max(1, round(height * box / width))
    return max(1, round(width * box / height)), box


def _resizable(im: Image.Image) -> Image.Image:
    """A mode that resizes properly: RGB, L, or RGBA/LA (which Pillow resizes premultiplied)."""
    if im.mode in ("RGB", "L", "RGBA", "LA"):
        if im.mode in ("RGB", "L") and "transparency" in im.info:
            return im.convert("RGBA")
        return im
    if im.mode in ("P", "PA"):
        has_alpha = im.mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if im.mode == "1":
        return im.convert("L")
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey: keep the top 8 bits
        return im.convert("I").point(lambda v: v / 256).convert("L")
    if im.mode == "F":
        return im.convert("L")
    return im.convert("RGB")


def _encode(im: Image.Image, quality: int) -> bytes:
    im.info = {}  # Pillow copies info (EXIF, XMP, comment, ...) from image to image; JPEG save reads "comment"
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def derive(
    im: Image.Image,
    *,
    display_size: tuple[int, int],
    orientation: int,
    sizes: Mapping[str, int],
    quality: int,
    model_size: int | None = None,
) -> dict[str, bytes]:
    """Derivatives from a decoded (possibly drafted) image, largest first, each smaller one from the previous; with
    ``model_size``, also ``model``: the model tier's input square (BMP) from the largest one's pixels."""
    icc = im.info.get("icc_profile")
    swap = orientation in SWAPS_SIDES
    current = _resizable(im)
    oriented = False
    model: bytes | None = None
    encoded: dict[int, bytes] = {}
    for box in sorted(set(sizes.values()), reverse=True):
        target = fit_within(display_size, box)  # as displayed
        if not oriented:
            stored_target = (target[1], target[0]) if swap else target
            if current.size != stored_target:
                current = current.resize(stored_target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
            current.info = {}
            transpose = TRANSPOSE_FOR_ORIENTATION.get(orientation)
            if transpose is not None:
                current = current.transpose(transpose)
            current = to_srgb(flatten_onto_white(current), icc)
            oriented = True
            model = model_input_of_image(current, model_size) if model_size else None
        elif current.size != target:
            current = current.resize(target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
        encoded[box] = _encode(current, quality)
    out = {name: encoded[box] for name, box in sizes.items()}
    if model is not None:
        out["model"] = model
    return out
