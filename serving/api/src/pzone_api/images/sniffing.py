"""What an upload is, from its leading bytes only: JPEG, PNG or WebP, or the reason it is none of them.

Other image formats are named in the refusal (``unsupported_format``), markup and documents are ``active_content``,
anything else is ``not_an_image``; file names are never looked at. The declared content type must then name the
detected format (``type_mismatch``).
"""

from __future__ import annotations

import struct
import types
from collections.abc import Mapping
from typing import Final, Literal

from pzone_api.images.bad_image import BadImage

ImageFormat = Literal["JPEG", "PNG", "WEBP"]
ACCEPTED_CONTENT_TYPES: Final[Mapping[str, str]] = types.MappingProxyType(
    {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
)
# Spellings that some clients send for the same types.
_CONTENT_TYPE_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(
    {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
)

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"

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


def sniff(data: bytes) -> ImageFormat:
    """The format from the leading bytes, or :class:`BadImage`. File names are never looked at."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
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


def check_declared_type(declared: str | None, fmt: ImageFormat) -> None:
    if declared is None:
        return
    normalised = declared.split(";", 1)[0].strip().lower()
    normalised = _CONTENT_TYPE_ALIASES.get(normalised, normalised)
    detected = ACCEPTED_CONTENT_TYPES[fmt]
    if normalised != detected:
        shown = declared.strip() or "(empty)"
        raise BadImage("type_mismatch", f"the upload was declared as {shown} but the content is {detected}")
