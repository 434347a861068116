"""How every check refuses an upload: :class:`BadImage`, a stable code for programs and a reason for people."""

from __future__ import annotations

from typing import Final, Literal, get_args

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
    "too_small_dimensions",  # a side under MIN_SIDE: too few pixels to show the object (a 1x1 "photo")
    "animated",  # more than one frame (APNG, animated WebP)
    "unsupported_mode",  # not 8-bit RGB/RGBA/L/P: CMYK, 16-bit, 12-bit JPEG, LA, 1-bit, ...
]
BAD_IMAGE_CODES: Final[tuple[str, ...]] = get_args(BadImageCode)


class BadImage(ValueError):
    """The upload is not an acceptable photo.

    ``code`` is stable and meant for programs (one of :data:`BAD_IMAGE_CODES`); ``reason`` is a short sentence for
    people and may change.
    """

    def __init__(self, code: BadImageCode, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code: BadImageCode = code
        self.reason = reason
