"""Checks and derivatives for uploaded photos. Pure functions: no web, storage or database code.

Web clients put their photo straight into object storage; the API then reads the object back and calls

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
4. **Structure**, walked here in Python before Pillow runs: JPEG markers up to the end-of-image marker (including
   the entropy-coded data and the sequence of its restart markers), PNG chunks with their CRCs up to ``IEND``, the
   WebP RIFF container. Missing data is ``truncated``, inconsistent data ``corrupt``, and bytes after the end of
   the image ``polyglot``. Allowed after the end: padding (zero, 0xFF or white-space bytes), and what phones
   append to their JPEGs: further complete JPEG images (MPF/MPO files, the HDR gain maps of recent iPhone and
   Android "Ultra HDR" photos), then one Samsung SEF trailer or one MP4 video (Google Motion Photos), each of which
   must account exactly for the rest of the file and is searched like metadata in step 6.
5. **Header limits**, from the header values read in step 4, before any pixel is decoded: width x height over
   ``max_pixels`` (``too_many_pixels``), a side over ``max_side`` (``too_large_dimensions``), more than one frame
   (``animated``: APNG, animated WebP), more than 8 bits per sample (``unsupported_mode``: 16-bit PNG, 12-bit
   JPEG).
6. **Embedded content**: HTML, script, SVG, PHP or PDF markers in the first 1024 bytes (the window that content
   sniffers and PDF readers look at) or in any metadata segment (JPEG APPn/COM, PNG ancillary chunks, WebP
   EXIF/XMP/ICC chunks) or phone trailer, or a readable ZIP directory at the end of the file: ``polyglot``.
   Entropy-coded image data is not searched, so compressed bytes cannot trigger a false alarm by chance.
7. **Pillow** opens the header under :func:`_pillow_pixel_limit` (its own bomb guard set to ``max_pixels``, the
   :class:`~PIL.Image.DecompressionBombWarning` turned into an error: ``too_many_pixels``), confirms the format and
   the frame count, and checks the mode: only ``RGB``, ``RGBA``, ``L`` and ``P`` are accepted (``CMYK``, ``I;16``,
   ``LA``, ``1``, ... are ``unsupported_mode``).
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
import io
import os
import re
import struct
import threading
import types
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Final, Literal, NoReturn, get_args

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from pzone.preprocess import flatten_onto_white, model_input_of_image, to_srgb

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ACCEPTED_MODES",
    "BAD_IMAGE_CODES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SIZES",
    "BadImage",
    "BadImageCode",
    "ImageInfo",
    "inspect_and_derive",
    "inspect_image",
    "make_derivatives",
    "sha256_file",
]

BadImageCode = Literal[
    "empty",  # zero bytes
    "too_large",  # more bytes than max_bytes
    "not_an_image",  # text, random bytes, an archive: no image signature
    "active_content",  # HTML, SVG, XML or PDF: something a browser or a viewer would interpret
    "unsupported_format",  # an image, but not JPEG, PNG or WebP (GIF, BMP, TIFF, HEIC, AVIF, ...)
    "type_mismatch",  # the declared content type does not name the detected format
    "truncated",  # the data ends before the image does
    "corrupt",  # inconsistent structure, bad checksum, broken compressed data
    "polyglot",  # the file is also something else: data after the image, embedded markup/PDF/ZIP
    "too_many_pixels",  # width x height over max_pixels (decompression-bomb guard)
    "too_large_dimensions",  # a side over max_side
    "animated",  # more than one frame (APNG, animated WebP)
    "unsupported_mode",  # not 8-bit RGB/RGBA/L/P: CMYK, 16-bit, 12-bit JPEG, LA, 1-bit, ...
]
BAD_IMAGE_CODES: Final[tuple[str, ...]] = get_args(BadImageCode)

ImageFormat = Literal["JPEG", "PNG", "WEBP"]
ACCEPTED_CONTENT_TYPES: Final[Mapping[str, str]] = types.MappingProxyType(
    {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
)
# Spellings that some clients send for the same types.
_CONTENT_TYPE_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(
    {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
)
ACCEPTED_MODES: Final[frozenset[str]] = frozenset({"RGB", "RGBA", "L", "P"})

DEFAULT_SIZES: Final[Mapping[str, int]] = types.MappingProxyType({"thumb": 256, "preview": 1024})
DEFAULT_MAX_PIXELS: Final = 40_000_000  # the same as Settings.image_max_pixels' default
DEFAULT_QUALITY: Final = 85

# Resampling for derivatives. BICUBIC after JPEG DCT scaling and Image.reduce (reducing_gap) is what
# Image.thumbnail does; LANCZOS costs about 25 % more time per photo for a difference that is hard to see.
_RESAMPLE: Final = Image.Resampling.BICUBIC
_REDUCING_GAP: Final = 2.0

# The same table as PIL.ImageOps.exif_transpose.
_TRANSPOSE_FOR_ORIENTATION: Final[Mapping[int, Image.Transpose]] = types.MappingProxyType(
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
_SWAPS_SIDES: Final = frozenset({5, 6, 7, 8})

_TAG_ORIENTATION: Final = 0x0112
_TAG_DATETIME_ORIGINAL: Final = 0x9003
_TAG_OFFSET_TIME_ORIGINAL: Final = 0x9011
_TAG_SUBSEC_TIME_ORIGINAL: Final = 0x9291


class BadImage(ValueError):
    """The upload is not an acceptable photo.

    ``code`` is stable and meant for programs (one of :data:`BAD_IMAGE_CODES`); ``reason`` is a short sentence for
    people and may change.
    """

    def __init__(self, code: BadImageCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: BadImageCode = code
        self.reason = reason


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


# ---------------------------------------------------------------------------------------------------------------
# public API


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
    fmt = _sniff(data)
    largest = max(sizes.values())
    with _pillow_pixel_limit(max_pixels):
        im = _pillow_open(data, fmt)
        _check_pixels(im.size, max_pixels)
    display_size = im.size
    stored_size = im.size
    _draft(im, largest)
    _decode(im)
    orientation = _orientation(im)
    if orientation in _SWAPS_SIDES:
        display_size = (stored_size[1], stored_size[0])
    return _derive(im, display_size=display_size, orientation=orientation, sizes=sizes, quality=quality)


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
    derivatives = _derive(
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


# ---------------------------------------------------------------------------------------------------------------
# inspection


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
    fmt = _sniff(data)
    _check_declared_type(declared_content_type, fmt)
    layout = _LAYOUT_READERS[fmt](data)

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
    _check_embedded_content(data, layout)

    with _pillow_pixel_limit(max_pixels):
        im = _pillow_open(data, fmt)
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
    _draft(im, decode_limit if decode_limit is not None else 1)
    _decode(im)

    exif = _exif(im)
    orientation = _orientation(im, exif)
    taken_at, has_offset = _taken_at(exif)
    width, height = stored_size
    if orientation in _SWAPS_SIDES:
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


def _check_sides(size: tuple[int, int], max_side: int) -> None:
    width, height = size
    if max(width, height) > max_side:
        raise BadImage(
            "too_large_dimensions",
            f"the image is {width}x{height}; neither side may be over {max_side} pixels",
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


# ---------------------------------------------------------------------------------------------------------------
# content sniffing and declared type

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

# Other image formats, named in the reason. (prefix, offset, name)
_OTHER_IMAGE_SIGNATURES: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "BigTIFF"),
    (b"MM\x00+", 0, "BigTIFF"),
    (b"8BPS", 0, "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"\x00\x00\x02\x00", 0, "CUR"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "JPEG 2000"),
    (b"\xffO\xffQ", 0, "JPEG 2000"),
    (b"qoif", 0, "QOI"),
    (b"DDS ", 0, "DDS"),
    (b"\x76\x2f\x31\x01", 0, "OpenEXR"),
    (b"#?RADIANCE", 0, "Radiance HDR"),
)
_FTYP_BRANDS: Final[Mapping[bytes, str]] = types.MappingProxyType(
    {
        b"heic": "HEIC",
        b"heix": "HEIC",
        b"hevc": "HEIC",
        b"heim": "HEIC",
        b"heis": "HEIC",
        b"mif1": "HEIF",
        b"msf1": "HEIF",
        b"avif": "AVIF",
        b"avis": "AVIF",
    }
)
_BMP_HEADER_SIZES: Final = frozenset({12, 40, 52, 56, 64, 108, 124})
_BOMS: Final = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _sniff(data: bytes) -> ImageFormat:
    """The format from the leading bytes, or :class:`BadImage`. File names are never looked at."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    for prefix, offset, name in _OTHER_IMAGE_SIGNATURES:
        if data.startswith(prefix, offset):
            raise BadImage(
                "unsupported_format", f"{name} images are not accepted; upload a JPEG, PNG or WebP"
            )
    if data[4:8] == b"ftyp":
        brand = _FTYP_BRANDS.get(data[8:12])
        if brand is not None:
            raise BadImage(
                "unsupported_format", f"{brand} images are not accepted; upload a JPEG, PNG or WebP"
            )
    if (
        data.startswith(b"BM")
        and len(data) >= 18
        and struct.unpack_from("<I", data, 14)[0] in _BMP_HEADER_SIZES
    ):
        raise BadImage("unsupported_format", "BMP images are not accepted; upload a JPEG, PNG or WebP")
    active = _active_document(data)
    if active is not None:
        raise BadImage("active_content", f"this is {active}, not a photo")
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise BadImage("not_an_image", "this is a ZIP archive, not a photo")
    if _looks_like_text(data):
        raise BadImage("not_an_image", "this is text, not a photo")
    raise BadImage("not_an_image", "the content is not a JPEG, PNG or WebP image")


def _leading_text(data: bytes) -> bytes:
    """The first 2 KiB, without a byte-order mark and leading white space, lower case, UTF-16 folded to ASCII."""
    head = data[:2048]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head.decode("utf-16", "ignore").encode("ascii", "ignore")
    elif head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip(b" \t\r\n\x0c\x00").lower()


def _active_document(data: bytes) -> str | None:
    head = _leading_text(data)
    if head.startswith(b"%pdf") or b"%pdf-" in data[:1024]:
        return "a PDF document"
    if head.startswith(b"%!ps"):
        return "a PostScript document"
    if not head.startswith(b"<"):
        return None
    if b"<svg" in head:
        return "an SVG document"
    if head.startswith((b"<?xml", b"<!doctype", b"<!--")) and not any(t in head for t in _HTML_TAGS):
        return "an XML document"
    if len(head) > 1 and (head[1:2].isalpha() or head[1:2] in (b"!", b"?", b"/")):
        return "an HTML document"
    return None


_HTML_TAGS: Final = (
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<div",
    b"<a ",
    b"<meta",
    b"<title",
)


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(sample) - 4:  # a multi-byte character cut at the end of the sample is fine
            return False
    return True


def _check_declared_type(declared: str | None, fmt: ImageFormat) -> None:
    if declared is None:
        return
    normalised = declared.split(";", 1)[0].strip().lower()
    normalised = _CONTENT_TYPE_ALIASES.get(normalised, normalised)
    detected = ACCEPTED_CONTENT_TYPES[fmt]
    if normalised != detected:
        shown = declared.strip() or "(empty)"
        raise BadImage("type_mismatch", f"the upload was declared as {shown} but the content is {detected}")


# ---------------------------------------------------------------------------------------------------------------
# structure: JPEG markers, PNG chunks, WebP RIFF


@dataclass(slots=True)
class _Layout:
    end: int  # offset just past the image (and past embedded MPF images for JPEG)
    width: int
    height: int
    bits: int = 8  # JPEG sample precision, PNG bit depth
    frames: int = 1
    # (start, end) of the metadata segments / chunks, to search for embedded content
    metadata: list[tuple[int, int]] = field(default_factory=list)


def _truncated(what: str) -> NoReturn:
    raise BadImage("truncated", f"the file ends in the middle of the {what}; the upload is incomplete")


def _corrupt(what: str) -> NoReturn:
    raise BadImage("corrupt", f"the {what} is damaged")


_JPEG_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers that may appear between the frame header, tables and scans: DHT, DAC, DQT, DNL, DRI, EXP, APPn, COM.
_JPEG_TABLES_MISC: Final = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDF, *range(0xE0, 0xF0), 0xFE})
# In entropy-coded data, 0xFF is followed by 0x00 (stuffing), 0xFF (fill) or a marker: a restart marker
# 0xD0-0xD7 inside the scan, anything else ends it.
_JPEG_SCAN_MARKER: Final = re.compile(rb"\xff[^\x00\xff]")
_MAX_EMBEDDED_JPEGS: Final = 16
_PADDING: Final = b"\x00\xff \t\r\n"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(slots=True)
class _JpegFrame:
    precision: int
    height: int
    width: int
    components: dict[int, tuple[int, int]]  # component id -> (horizontal, vertical) sampling factor
    lossless: bool

    def mcus(self, scan_components: list[int]) -> int:
        """Number of MCUs in a DCT scan of these components (ITU T.81 A.2)."""
        h_max = max(h for h, _ in self.components.values())
        v_max = max(v for _, v in self.components.values())
        if len(scan_components) == 1:  # non-interleaved: one 8x8 block per MCU
            h, v = self.components[scan_components[0]]
            blocks_wide = _ceil_div(_ceil_div(self.width * h, h_max), 8)
            blocks_high = _ceil_div(_ceil_div(self.height * v, v_max), 8)
            return blocks_wide * blocks_high
        return _ceil_div(self.width, 8 * h_max) * _ceil_div(self.height, 8 * v_max)


def _jpeg_frame(data: bytes, marker: int, pos: int, length: int) -> _JpegFrame:
    if length < 8:
        _corrupt("JPEG frame header")
    precision = data[pos + 2]
    height, width, count = struct.unpack_from(">HHB", data, pos + 3)
    if length < 8 + 3 * count or count == 0:
        _corrupt("JPEG frame header")
    components: dict[int, tuple[int, int]] = {}
    for i in range(count):
        cid, sampling = data[pos + 8 + 3 * i], data[pos + 9 + 3 * i]
        h, v = sampling >> 4, sampling & 0x0F
        if not (1 <= h <= 4 and 1 <= v <= 4):
            _corrupt("JPEG frame header (sampling factors)")
        components[cid] = (h, v)
    return _JpegFrame(precision, height, width, components, lossless=marker in (0xC3, 0xC7, 0xCB, 0xCF))


def _jpeg_scan_components(data: bytes, pos: int, length: int, frame: _JpegFrame) -> list[int]:
    count = data[pos + 2] if length >= 3 else 0
    if count == 0 or length < 6 + 2 * count:
        _corrupt("JPEG scan header")
    ids = [data[pos + 3 + 2 * i] for i in range(count)]
    if any(cid not in frame.components for cid in ids):
        _corrupt("JPEG scan header (unknown component)")
    return ids


def _jpeg_image(data: bytes, start: int) -> _Layout:
    """One JPEG image from its SOI at ``start`` to its EOI, with the frame header's values.

    Besides the segment structure, it checks the restart markers of each scan when the image has a restart
    interval (most camera JPEGs do): they must count 0-7 in order and be as many as the interval implies. That
    catches most damage to the entropy-coded data, which libjpeg only warns about and Pillow ignores.
    """
    n = len(data)
    pos = start + 2
    frame: _JpegFrame | None = None
    restart_interval = 0
    seen_scan = False
    metadata: list[tuple[int, int]] = []
    while True:
        if pos >= n:
            _truncated("JPEG headers")
        if data[pos] != 0xFF:
            _corrupt(f"JPEG structure (no marker at byte {pos})")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            _truncated("JPEG headers")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if frame is None or not seen_scan:
                _corrupt("JPEG structure (end of image before any image data)")
            return _Layout(
                end=pos, width=frame.width, height=frame.height, bits=frame.precision, metadata=metadata
            )
        allowed = marker in _JPEG_TABLES_MISC or marker == 0xDA or (frame is None and marker in _JPEG_SOF)
        if not allowed:
            where = "image data" if seen_scan else "structure"
            _corrupt(f"JPEG {where} (unexpected marker 0xFF{marker:02X} at byte {pos - 2})")
        if pos + 2 > n:
            _truncated("JPEG headers")
        length = (data[pos] << 8) | data[pos + 1]
        seg_end = pos + length
        if length < 2:
            _corrupt(f"JPEG structure (bad segment length at byte {pos})")
        if seg_end > n:
            _truncated("JPEG headers")
        if marker in _JPEG_SOF:
            frame = _jpeg_frame(data, marker, pos, length)
        elif marker == 0xDD:  # DRI
            if length < 4:
                _corrupt("JPEG restart interval")
            restart_interval = (data[pos + 2] << 8) | data[pos + 3]
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:  # APPn, COM
            metadata.append((pos + 2, seg_end))
        pos = seg_end
        if marker == 0xDA:  # SOS: the entropy-coded data follows the header
            if frame is None:
                _corrupt("JPEG structure (image data before the frame header)")
            expected_restarts = -1
            if restart_interval and not frame.lossless:
                mcus = frame.mcus(_jpeg_scan_components(data, pos - length, length, frame))
                expected_restarts = -(-mcus // restart_interval) - 1
            seen_scan = True
            pos = _jpeg_skip_scan(data, pos, expected_restarts)


def _jpeg_skip_scan(data: bytes, pos: int, expected_restarts: int) -> int:
    """Offset of the marker that ends the entropy-coded data at ``pos``; checks the restart markers."""
    for restarts, match in enumerate(_JPEG_SCAN_MARKER.finditer(data, pos)):
        marker = data[match.start() + 1]
        if not 0xD0 <= marker <= 0xD7:
            if expected_restarts >= 0 and restarts not in (expected_restarts, expected_restarts + 1):
                _corrupt(f"JPEG image data ({restarts} restart markers where {expected_restarts} belong)")
            return match.start()
        if marker != 0xD0 + restarts % 8:
            _corrupt(f"JPEG image data (restart marker out of sequence at byte {match.start()})")
    _truncated("JPEG image data")


def _is_padding(data: bytes, start: int) -> bool:
    return not data[start:].strip(_PADDING)


def _jpeg_layout(data: bytes) -> _Layout:
    layout = _jpeg_image(data, 0)
    pos = layout.end
    embedded = 0
    while not _is_padding(data, pos):
        # MPF (multi-picture) files and HDR gain maps store further complete JPEGs after the first one's EOI.
        if data.startswith(b"\xff\xd8\xff", pos) and embedded < _MAX_EMBEDDED_JPEGS:
            extra = _jpeg_image(data, pos)
            layout.metadata.extend(extra.metadata)
            pos = extra.end
            embedded += 1
            continue
        if _is_samsung_trailer(data, pos) or _is_isobmff(data, pos):
            layout.metadata.append((pos, len(data)))  # searched for embedded content like metadata
            pos = len(data)
            break
        if data.rstrip(_PADDING).endswith(b"\xff\xd9"):
            # The real end-of-image marker is still to come: an EOI pattern inside damaged image data.
            _corrupt("JPEG image data (an end-of-image marker in the middle of the data)")
        raise BadImage(
            "polyglot",
            f"{len(data) - pos} bytes follow the end of the JPEG image (the file is also something else)",
        )
    layout.end = pos
    return layout


def _is_samsung_trailer(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` is exactly one Samsung SEF trailer (Galaxy phones: capture time, Motion Photo...).

    Layout (as ExifTool reads it): data blocks, then a directory ``SEFH`` + version + count + ``count`` entries of
    (type, offset back from the directory, size), then the directory's length and ``SEFT``. The directory must
    account for every byte from ``start``.
    """
    end = len(data)
    if end - start < 20 or not data.endswith(b"SEFT"):
        return False
    (dir_len,) = struct.unpack_from("<I", data, end - 8)
    dir_pos = end - 8 - dir_len
    if dir_len < 12 or dir_pos < start or data[dir_pos : dir_pos + 4] != b"SEFH":
        return False
    (count,) = struct.unpack_from("<I", data, dir_pos + 8)
    if 12 + 12 * count > dir_len:
        return False
    first_block = 0
    for i in range(count):
        back, size = struct.unpack_from("<II", data, dir_pos + 16 + 12 * i)
        if back > dir_pos - start or size > back or size < 8:
            return False
        first_block = max(first_block, back)
    return dir_pos - first_block == start


def _is_isobmff(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` is exactly a sequence of ISO-BMFF boxes starting with ``ftyp``: the MP4 video that
    Google Motion Photos append to the JPEG."""
    end = len(data)
    pos = start
    while pos < end:
        if pos + 8 > end:
            return False
        size, box = struct.unpack_from(">I4s", data, pos)
        if (pos == start and box != b"ftyp") or not all(0x20 <= c < 0x7F for c in box):
            return False
        if size == 1:
            if pos + 16 > end:
                return False
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            if size < 16:
                return False
        elif size == 0:
            size = end - pos
        elif size < 8:
            return False
        pos += size
    return pos == end


def _png_layout(data: bytes) -> _Layout:
    n = len(data)
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    header: tuple[int, int, int] | None = None  # width, height, bit depth
    frames = 1
    seen_idat = False
    metadata: list[tuple[int, int]] = []
    while True:
        if pos + 12 > n:
            _truncated("PNG data")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        body = pos + 8
        end = body + length + 4
        if length > 0x7FFFFFFF or not ctype.isalpha():
            _corrupt(f"PNG chunk at byte {pos}")
        if end > n:
            _truncated("PNG data")
        (crc,) = struct.unpack_from(">I", data, body + length)
        if zlib.crc32(view[pos + 4 : body + length]) != crc:
            _corrupt(f"PNG {ctype.decode('ascii')} chunk (bad CRC)")
        if header is None:
            if ctype != b"IHDR" or length != 13:
                _corrupt("PNG header")
            width, height, bit_depth = struct.unpack_from(">IIB", data, body)
            header = (width, height, bit_depth)
        elif ctype == b"acTL":
            if length < 8:
                _corrupt("PNG animation control chunk")
            (frames,) = struct.unpack_from(">I", data, body)
        elif ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            if not seen_idat:
                _corrupt("PNG (no image data)")
            if not _is_padding(data, end):
                raise BadImage(
                    "polyglot",
                    f"{n - end} bytes follow the end of the PNG image (the file is also something else)",
                )
            width, height, bit_depth = header
            return _Layout(
                end=end, width=width, height=height, bits=bit_depth, frames=frames, metadata=metadata
            )
        elif ctype != b"fdAT":
            metadata.append((body, body + length))
        pos = end


def _webp_layout(data: bytes) -> _Layout:
    n = len(data)
    if n < 20:
        _truncated("WebP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if riff_size < 12:
        _corrupt("WebP container")
    if end > n:
        _truncated("WebP data")
    if not _is_padding(data, end):
        raise BadImage(
            "polyglot", f"{n - end} bytes follow the end of the WebP image (the file is also something else)"
        )
    pos = 12
    size: tuple[int, int] | None = None
    canvas: tuple[int, int] | None = None
    frames = 0
    animated = False
    metadata: list[tuple[int, int]] = []
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if body + length > end:
            _truncated("WebP data")
        if fourcc == b"VP8X":
            if length < 10:
                _corrupt("WebP extended header")
            animated = bool(data[body] & 0x02)
            canvas = (
                1 + int.from_bytes(data[body + 4 : body + 7], "little"),
                1 + int.from_bytes(data[body + 7 : body + 10], "little"),
            )
        elif fourcc == b"VP8 ":
            if length < 10 or data[body + 3 : body + 6] != b"\x9d\x01\x2a":
                _corrupt("WebP (VP8) image header")
            w, h = struct.unpack_from("<HH", data, body + 6)
            size = size or (w & 0x3FFF, h & 0x3FFF)
            frames += 1
        elif fourcc == b"VP8L":
            if length < 5 or data[body] != 0x2F:
                _corrupt("WebP (lossless) image header")
            (bits,) = struct.unpack_from("<I", data, body + 1)
            size = size or ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
            frames += 1
        elif fourcc == b"ANMF":
            frames += 1
        elif fourcc not in (b"ALPH", b"ANIM"):
            metadata.append((body, body + length))  # EXIF, XMP, ICCP and unknown chunks
        pos = body + length + (length & 1)
    dims = canvas or size
    if dims is None or frames == 0:
        _corrupt("WebP (no image data)")
    if not animated:
        frames = 1
    return _Layout(end=end, width=dims[0], height=dims[1], frames=frames, metadata=metadata)


_LAYOUT_READERS: Final[Mapping[str, Callable[[bytes], _Layout]]] = types.MappingProxyType(
    {"JPEG": _jpeg_layout, "PNG": _png_layout, "WEBP": _webp_layout}
)

# Markers of content that browsers, PDF readers or servers would act on, in lower case. Long enough (>= 5 bytes,
# and only looked for in the first KiB, metadata and trailers, not in compressed image data) that binary data
# does not match them by chance.
_EMBEDDED_MARKERS: Final = re.compile(
    rb"<(?:script|html[\s>]|iframe|object[\s>]|embed[\s>]|svg[\s>]|!doctype html|\?php\s)|javascript:|%pdf-"
)
_SNIFF_WINDOW: Final = 1024
_ZIP_END_WINDOW: Final = 22 + 0xFFFF  # end-of-central-directory record plus the longest ZIP comment


def _check_embedded_content(data: bytes, layout: _Layout) -> None:
    # bytes.lower() and a case-sensitive pattern: several times faster than re.IGNORECASE (about 5 ms per MB).
    for start, end in [(0, _SNIFF_WINDOW), *layout.metadata]:
        found = _EMBEDDED_MARKERS.search(data[start:end].lower())
        if found is not None:
            marker = found.group().decode("ascii", "replace").strip()
            raise BadImage("polyglot", f"the image carries embedded {marker!r} content (HTML, script or PDF)")
    if data.find(b"PK\x05\x06", max(0, len(data) - _ZIP_END_WINDOW)) >= 0:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return
        if names:
            raise BadImage("polyglot", "the image is also a ZIP archive")


# ---------------------------------------------------------------------------------------------------------------
# Pillow

_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb guard set to ``max_pixels`` for the duration, without leaking it.

    ``Image.MAX_IMAGE_PIXELS`` and the warnings filters are process-wide, so this holds a module lock, saves both,
    sets the limit and an "error" filter for :class:`~PIL.Image.DecompressionBombWarning` (Pillow only *warns*
    between the limit and twice the limit), and restores both on exit, exception or not. Concurrent callers in
    this module take turns; the lock is held only while ``Image.open`` parses a header (well under a millisecond
    for a JPEG), which is where Pillow applies the limit (``load()`` does not check it again), so decodes still run
    in parallel. Caveats, as for any use of these globals: Pillow code elsewhere in the process that opens an image
    during that window sees the same limit, and a warnings filter that another thread adds during it is dropped
    when ``warnings.catch_warnings`` restores the list.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _pillow_open(data: bytes, fmt: ImageFormat) -> ImageFile.ImageFile:
    """Open (header only) with the one plugin for the sniffed format. Run it under :func:`_pillow_pixel_limit`."""
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_many_pixels", f"the image has too many pixels ({e})") from e
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError, struct.error) as e:
        raise BadImage("corrupt", f"{fmt} header that cannot be read ({e})") from e
    if not (im.format == fmt or (fmt == "JPEG" and im.format == "MPO")):
        raise BadImage("corrupt", f"{fmt} header that cannot be read (read as {im.format})")
    return im


def _draft(im: ImageFile.ImageFile, box: int) -> None:
    """JPEG only: let libjpeg scale by 1/2, 1/4 or 1/8 while decoding, keeping at least a ``box`` fit."""
    if im.format in ("JPEG", "MPO"):
        im.draft(None, fit_within(im.size, box))


def _decode(im: ImageFile.ImageFile) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; pzone_api.images needs it off "
            "to refuse truncated uploads"
        )
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_many_pixels", f"the image has too many pixels ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        if "truncated" in str(e):
            raise BadImage(
                "truncated", "the file ends before the image does; the upload is incomplete"
            ) from e
        raise BadImage("corrupt", f"the image data cannot be decoded ({e})") from e


def _exif(im: Image.Image) -> Image.Exif | None:
    try:
        return im.getexif()
    except Exception:  # a malformed EXIF block must not make the photo unacceptable
        return None


def _orientation(im: Image.Image, exif: Image.Exif | None = None) -> int:
    if exif is None:
        exif = _exif(im)
    if exif is None:
        return 1
    value = exif.get(_TAG_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _taken_at(exif: Image.Exif | None) -> tuple[datetime | None, bool]:
    if exif is None:
        return None, False
    try:
        ifd = exif.get_ifd(ExifTags.IFD.Exif)
    except Exception:
        return None, False
    raw = ifd.get(_TAG_DATETIME_ORIGINAL)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "ignore")
    if not isinstance(raw, str):
        return None, False
    try:
        taken = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None, False
    subsec = ifd.get(_TAG_SUBSEC_TIME_ORIGINAL)
    if isinstance(subsec, str) and subsec.strip("\x00 ").isdigit():
        digits = subsec.strip("\x00 ")[:6].ljust(6, "0")
        taken = taken.replace(microsecond=int(digits))
    offset = ifd.get(_TAG_OFFSET_TIME_ORIGINAL)
    if isinstance(offset, str):
        match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", offset.strip("\x00 "))
        if match is not None:
            delta = timedelta(hours=int(match[2]), minutes=int(match[3]))
            if delta < timedelta(hours=24):
                tz = timezone(-delta if match[1] == "-" else delta)
                return taken.replace(tzinfo=tz), True
    return taken.replace(tzinfo=UTC), False


# ---------------------------------------------------------------------------------------------------------------
# derivatives


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


def _derive(
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
    swap = orientation in _SWAPS_SIDES
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
            transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
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
