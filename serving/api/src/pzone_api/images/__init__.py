"""Checks and derivatives for uploaded photos. Pure functions: no web, storage or database code.

Callers import from here. The modules, in the order a photo goes through them:

* :mod:`~pzone_api.images.inspection`: the entry points (:func:`inspect_image`, :func:`make_derivatives`,
  :func:`inspect_and_derive`, :func:`sha256_file`), every check in order, and :class:`ImageInfo`.
* :mod:`~pzone_api.images.sniffing`: the format from the leading bytes, active and text content, the declared
  content type.
* :mod:`~pzone_api.images.containers`: the JPEG, PNG and WebP layouts walked in Python, and the search of their
  metadata for embedded content.
* :mod:`~pzone_api.images.decoding`: Pillow under the pixel limit, the (draft) decode, EXIF orientation and
  capture time.
* :mod:`~pzone_api.images.derivatives`: thumbnail, preview and the model tier's input from the decoded image.
* :mod:`~pzone_api.images.bad_image`: :class:`BadImage` and its codes, what every check raises.
"""

from pzone_api.images.bad_image import BAD_IMAGE_CODES, BadImage, BadImageCode
from pzone_api.images.derivatives import DEFAULT_QUALITY, DEFAULT_SIZES, fit_within
from pzone_api.images.inspection import (
    ACCEPTED_MODES,
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    Source,
    inspect_and_derive,
    inspect_image,
    make_derivatives,
    sha256_file,
)
from pzone_api.images.sniffing import ACCEPTED_CONTENT_TYPES, ImageFormat

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ACCEPTED_MODES",
    "BAD_IMAGE_CODES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_QUALITY",
    "DEFAULT_SIZES",
    "BadImage",
    "BadImageCode",
    "ImageFormat",
    "ImageInfo",
    "Source",
    "fit_within",
    "inspect_and_derive",
    "inspect_image",
    "make_derivatives",
    "sha256_file",
]
