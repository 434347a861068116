"""The entry points of photo intake: every check of an upload, in order, and its derivatives from the same decode.

Pure functions: no web, storage or database code. Web clients put their photo straight into object storage; the
API then reads the object back and calls

- :func:`inspect_image` to decide whether the upload is an acceptable photo (JPEG, PNG or WebP still image, 8 bits
  per channel, within the pixel and side limits, complete, not carrying anything besides the picture). It raises
  :class:`BadImage` with a stable ``code`` and a short human ``reason`` when it is not;
- :func:`make_derivatives` to make the JPEG thumbnail and preview that are served back (EXIF orientation applied,
  every piece of metadata dropped, GPS included);
- or :func:`inspect_and_derive` for both with a single decode;
- :func:`sha256_file` for the content address.

How the checks work, in order (the first failure wins):

1. **Size**: zero bytes (``empty``); over ``max_bytes`` when given (``too_large``).
2. **Content sniffing**, never the name: the leading bytes must be a JPEG, PNG or WebP signature. Other image
   formats (GIF, BMP, TIFF, HEIC, AVIF, ...) are ``unsupported_format``; markup and documents (HTML, SVG, XML, PDF)
   are ``active_content``; anything else, text included, is ``not_an_image``. Only the detected format's Pillow
   plugin ever sees the bytes, so no other decoder (and no Ghostscript) can be reached.
3. **Declared content type** (the one the client signed the upload for) must name the detected format
   (``type_mismatch``); ``None`` skips this check.
4. **Structure**, walked in Python before Pillow runs (:mod:`~pzone_api.images.containers`): JPEG markers up to the
   end-of-image marker (including the entropy-coded data and the sequence of its restart markers), PNG chunks with
   their CRCs up to ``IEND``, the WebP RIFF container. Missing data is ``truncated``, inconsistent data
   ``corrupt``, and bytes after the end of the image ``polyglot``. Allowed after the end: padding (zero, 0xFF or
   white-space bytes), and what phones append to their JPEGs: further complete JPEG images (MPF/MPO files, the HDR
   gain maps of recent iPhone and Android "Ultra HDR" photos), then one Samsung SEF trailer or one MP4 video
   (Google Motion Photos), each of which must account exactly for the rest of the file and is searched like
   metadata in step 6.
5. **Header limits**, from the header values read in step 4, before any pixel is decoded: width x height over
   ``max_pixels`` (``too_many_pixels``), a side over ``max_side`` (``too_large_dimensions``) or under
   :data:`MIN_SIDE` (``too_small_dimensions``), more than one frame
   (``animated``: APNG, animated WebP), more than 8 bits per sample (``unsupported_mode``: 16-bit PNG, 12-bit
   JPEG).
6. **Embedded content**: HTML, script, SVG, PHP or PDF markers in the first 1024 bytes (the window that content
   sniffers and PDF readers look at) or in any metadata segment (JPEG APPn/COM, PNG ancillary chunks, WebP
   EXIF/XMP/ICC chunks) or phone trailer, or a readable ZIP directory at the end of the file: ``polyglot``.
   Entropy-coded image data is not searched, so compressed bytes cannot trigger a false alarm by chance.
7. **Pillow** opens the header under :func:`~pzone_api.images.decoding.pillow_pixel_limit` (its own bomb guard set
   to ``max_pixels``, the :class:`~PIL.Image.DecompressionBombWarning` turned into an error: ``too_many_pixels``),
   confirms the format and the frame count, and checks the mode: only ``RGB``, ``RGBA``, ``L`` and ``P`` are
   accepted (``CMYK``, ``I;16``, ``LA``, ``1``, ... are ``unsupported_mode``).
8. **A decode of all the data**, with ``ImageFile.LOAD_TRUNCATED_IMAGES`` false, so a truncated or broken stream
   fails (``truncated`` / ``corrupt``). For JPEG the decode uses draft mode (DCT scaling): libjpeg still reads and
   Huffman-decodes every coefficient of every scan, so every bitstream error is still found, but the inverse DCT
   and colour conversion run at 1/8 scale, about half the cost of a full-size decode for a 12-megapixel photo.

Known limits: a JPEG whose scan data was overwritten with bytes that happen to be valid entropy-coded data (for
example a run of zeros) decodes "successfully" into a garbled picture; nothing short of looking at the picture
can tell. The stored original of a Motion Photo keeps its video (the derivatives do not): it is served as
``image/jpeg``, where browsers show the picture only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from PIL import ImageFile

from pzone_api.images.bad_image import BadImage
from pzone_api.images.containers import LAYOUT_READERS, check_embedded_content
from pzone_api.images.decoding import (
    decode,
    draft,
    exif_of,
    orientation_of,
    pillow_open,
    pillow_pixel_limit,
    taken_at_of,
)
from pzone_api.images.derivatives import DEFAULT_QUALITY, DEFAULT_SIZES, SWAPS_SIDES, derive
from pzone_api.images.sniffing import ACCEPTED_CONTENT_TYPES, ImageFormat, check_declared_type, sniff

ACCEPTED_MODES: Final[frozenset[str]] = frozenset({"RGB", "RGBA", "L", "P"})
DEFAULT_MAX_PIXELS: Final = 40_000_000  # the same as Settings.image_max_pixels' default


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What :func:`inspect_image` found out about an acceptable photo.

    ``width`` and ``height`` are as displayed, that is after the EXIF orientation is applied (swapped for
    orientations 5 to 8). ``mode`` is Pillow's mode of the stored image (``RGB``, ``RGBA``, ``L`` or ``P``).

    ``exif_taken_at`` comes from EXIF ``DateTimeOriginal`` (with ``SubSecTimeOriginal``), and is always timezone
    aware: with the offset from ``OffsetTimeOriginal`` when the camera wrote one, else **read as UTC** (most
    cameras write local time without an offset, so in that case the value may be off by the photographer's UTC
    offset; ``exif_taken_at_has_offset`` is false then). ``None`` when absent or unreadable.
    """

    format: ImageFormat
    content_type: str
    width: int
    height: int
    mode: str
    exif_taken_at: datetime | None
    orientation: int
    size_bytes: int
    exif_taken_at_has_offset: bool = False


Source = bytes | bytearray | memoryview | str | os.PathLike[str]


def inspect_image(
    path_or_bytes: Source,
    *,
    declared_content_type: str | None,
    max_pixels: int,
    max_side: int,
    max_bytes: int | None = None,
) -> ImageInfo:
    """Check an uploaded photo and describe it; raise :class:`BadImage` if it is not acceptable.

    ``path_or_bytes`` is the object's content or a local file holding it. ``declared_content_type`` is the
    ``Content-Type`` the client declared (parameters and case are ignored; ``image/jpg`` and ``image/pjpeg`` count
    as ``image/jpeg``); ``None`` skips that check. ``max_pixels`` and ``max_side`` are the limits from the settings
    (``image_max_pixels``, ``image_max_side``); ``max_bytes`` (``upload_max_bytes``) is checked when given.

    The whole image is decoded once (at 1/8 scale for JPEG, see the module docstring) so that truncated and broken
    files fail here. Raises ``RuntimeError`` if ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was turned on in this
    process, since the truncation check relies on it being off (Pillow's default).
    """
    data = _read(path_or_bytes, max_bytes)
    info, _ = _inspect(
        data,
        declared_content_type=declared_content_type,
        max_pixels=max_pixels,
        max_side=max_side,
        decode_limit=None,
    )
    return info


def make_derivatives(
    path_or_bytes: Source,
    *,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    quality: int = DEFAULT_QUALITY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, bytes]:
    """JPEG derivatives of a photo, each fitting in a ``size`` x ``size`` box: ``{name: jpeg_bytes}``.

    The EXIF orientation is applied (the same transposition as ``ImageOps.exif_transpose``), transparency is
    flattened onto white, colours are converted to sRGB when the photo has another ICC profile (Display P3 from
    phones, for example), and **no metadata at all** is written: no EXIF (so no GPS), no XMP, no ICC profile, no
    comment. Photos smaller than a box are not enlarged.

    It decodes the photo once, for the largest size, in JPEG draft mode (DCT scaling by 1/2, 1/4 or 1/8, the largest
    reduction that still leaves at least the box), then resizes with ``reducing_gap`` (``Image.reduce`` first) and
    makes each smaller size from the previous one. A 12-megapixel JPEG is decoded at 3 megapixels for a 1024 box.

    This does not validate the upload (call :func:`inspect_image` first, or use :func:`inspect_and_derive`); it only
    refuses other formats and, as a last guard, more than ``max_pixels`` pixels.
    """
    _check_sizes(sizes, quality)
    data = _read(path_or_bytes, None)
    fmt = sniff(data)
    largest = max(sizes.values())
    with pillow_pixel_limit(max_pixels):
        im = pillow_open(data, fmt)
        _check_pixels(im.size, max_pixels)
    display_size = im.size
    stored_size = im.size
    draft(im, largest)
    decode(im)
    orientation = orientation_of(im)
    if orientation in SWAPS_SIDES:
        display_size = (stored_size[1], stored_size[0])
    return derive(im, display_size=display_size, orientation=orientation, sizes=sizes, quality=quality)


def inspect_and_derive(
    path_or_bytes: Source,
    *,
    declared_content_type: str | None,
    max_pixels: int,
    max_side: int,
    max_bytes: int | None = None,
    sizes: Mapping[str, int] = DEFAULT_SIZES,
    quality: int = DEFAULT_QUALITY,
    model_size: int | None = None,
) -> tuple[ImageInfo, dict[str, bytes]]:
    """:func:`inspect_image` and :func:`make_derivatives` with one decode, at the scale the largest size needs.

    The checks are the same as :func:`inspect_image`'s (the decode that makes the derivatives also reads all the
    data, so it is the truncation check), and so is the output of the derivatives. With ``model_size``, the result
    also has ``model``: the model tier's input (``pzone.preprocess.model_input_of_image`` of the largest
    derivative's pixels: oriented, sRGB, no metadata), which is sent, never stored.
    """
    _check_sizes(sizes, quality)
    data = _read(path_or_bytes, max_bytes)
    info, im = _inspect(
        data,
        declared_content_type=declared_content_type,
        max_pixels=max_pixels,
        max_side=max_side,
        decode_limit=max(sizes.values()),
    )
    derivatives = derive(
        im,
        display_size=(info.width, info.height),
        orientation=info.orientation,
        sizes=sizes,
        quality=quality,
        model_size=model_size,
    )
    return info, derivatives


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks (never the whole file in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _inspect(
    data: bytes,
    *,
    declared_content_type: str | None,
    max_pixels: int,
    max_side: int,
    decode_limit: int | None,
) -> tuple[ImageInfo, ImageFile.ImageFile]:
    if max_pixels <= 0 or max_side <= 0:
        raise ValueError("max_pixels and max_side must be positive")
    fmt = sniff(data)
    check_declared_type(declared_content_type, fmt)
    layout = LAYOUT_READERS[fmt](data)

    # Header limits from our own parse, before Pillow allocates anything.
    _check_pixels((layout.width, layout.height), max_pixels)
    _check_sides((layout.width, layout.height), max_side)
    if layout.frames > 1:
        raise BadImage(
            "animated", f"animated images are not accepted ({layout.frames} frames); upload a photo"
        )
    if layout.bits > 8:
        raise BadImage(
            "unsupported_mode",
            f"{layout.bits}-bit samples are not accepted; save the photo with 8 bits per channel",
        )
    check_embedded_content(data, layout)

    with pillow_pixel_limit(max_pixels):
        im = pillow_open(data, fmt)
        # Belt and braces: Pillow's own reading of the header must agree with the limits too.
        _check_pixels(im.size, max_pixels)
        _check_sides(im.size, max_side)
    frames = 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1))
    if frames > 1:
        raise BadImage("animated", f"animated images are not accepted ({frames} frames); upload a photo")
    if im.mode not in ACCEPTED_MODES:
        raise BadImage("unsupported_mode", _mode_reason(im.mode))

    mode = im.mode
    stored_size = im.size
    # A draft at 1/8 (or at the derivatives' size) still decodes every entropy-coded bit: see the module docstring.
    draft(im, decode_limit if decode_limit is not None else 1)
    decode(im)

    exif = exif_of(im)
    orientation = orientation_of(im, exif)
    taken_at, has_offset = taken_at_of(exif)
    width, height = stored_size
    if orientation in SWAPS_SIDES:
        width, height = height, width
    info = ImageInfo(
        format=fmt,
        content_type=ACCEPTED_CONTENT_TYPES[fmt],
        width=width,
        height=height,
        mode=mode,
        exif_taken_at=taken_at,
        orientation=orientation,
        size_bytes=len(data),
        exif_taken_at_has_offset=has_offset,
    )
    return info, im


def _read(source: Source, max_bytes: int | None) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise BadImage("too_large", f"the file is larger than {max_bytes} bytes")
        data = path.read_bytes()
    if not data:
        raise BadImage("empty", "the file is empty")
    if max_bytes is not None and len(data) > max_bytes:
        raise BadImage("too_large", f"the file is larger than {max_bytes} bytes")
    return data


def _check_sizes(sizes: Mapping[str, int], quality: int) -> None:
    if not sizes or any(not isinstance(v, int) or v <= 0 for v in sizes.values()):
        raise ValueError(f"sizes must map names to positive integers, got {dict(sizes)!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, got {quality}")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise BadImage("corrupt", f"the image header gives an empty size ({width}x{height})")
    if width * height > max_pixels:
        raise BadImage(
            "too_many_pixels",
            f"the image has {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
        )


# The smallest side a photo may have: fewer pixels cannot show a parked object (the thumbnail alone is 256 px),
# and a 1x1 image is a tracking pixel or a probe, not a photo.
MIN_SIDE = 32


def _check_sides(size: tuple[int, int], max_side: int) -> None:
    width, height = size
    if max(width, height) > max_side:
        raise BadImage(
            "too_large_dimensions",
            f"the image is {width}x{height}; neither side may be over {max_side} pixels",
        )
    if min(width, height) < MIN_SIDE:
        raise BadImage(
            "too_small_dimensions",
            f"the image is {width}x{height}; neither side may be under {MIN_SIDE} pixels",
        )


def _mode_reason(mode: str) -> str:
    what = {
        "CMYK": "CMYK (print) colours",
        "YCbCr": "YCbCr colours",
        "LAB": "Lab colours",
        "LA": "grey with transparency",
        "PA": "palette with alpha",
        "1": "1-bit black and white",
        "I": "32-bit integer samples",
        "F": "floating-point samples",
    }.get(mode, "16-bit samples" if "16" in mode else f"pixel mode {mode}")
    return f"{what} are not accepted; save the photo as 8-bit RGB (sRGB)"
