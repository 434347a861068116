"""Pillow on an upload that passed the structural checks: the header opened under the pixel limit, the whole data
decoded (at reduced scale for JPEG), and what EXIF says: orientation and when the photo was taken.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from pzone_api.images.bad_image import BadImage
from pzone_api.images.derivatives import fit_within
from pzone_api.images.sniffing import ImageFormat

_TAG_ORIENTATION: Final = 0x0112
_TAG_DATETIME_ORIGINAL: Final = 0x9003
_TAG_OFFSET_TIME_ORIGINAL: Final = 0x9011
_TAG_SUBSEC_TIME_ORIGINAL: Final = 0x9291

_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb guard set to ``max_pixels`` for the duration, without leaking it.

    ``Image.MAX_IMAGE_PIXELS`` and the warnings filters are process-wide, so this holds a module lock, saves both,
    sets the limit and an "error" filter for :class:`~PIL.Image.DecompressionBombWarning` (Pillow only *warns*
    between the limit and twice the limit), and restores both on exit, exception or not. Concurrent callers in
    this package take turns; the lock is held only while ``Image.open`` parses a header (well under a millisecond
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


def pillow_open(data: bytes, fmt: ImageFormat) -> ImageFile.ImageFile:
    """Open (header only) with the one plugin for the sniffed format. Run it under :func:`pillow_pixel_limit`."""
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too_many_pixels", f"the image has too many pixels ({e})") from e
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError, struct.error) as e:
        raise BadImage("corrupt", f"{fmt} header that cannot be read ({e})") from e
    if not (im.format == fmt or (fmt == "JPEG" and im.format == "MPO")):
        raise BadImage("corrupt", f"{fmt} header that cannot be read (read as {im.format})")
    return im


def draft(im: ImageFile.ImageFile, box: int) -> None:
    """JPEG only: let libjpeg scale by 1/2, 1/4 or 1/8 while decoding, keeping at least a ``box`` fit."""
    if im.format in ("JPEG", "MPO"):
        im.draft(None, fit_within(im.size, box))


def decode(im: ImageFile.ImageFile) -> None:
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


def exif_of(im: Image.Image) -> Image.Exif | None:
    try:
        return im.getexif()
    except Exception:  # a malformed EXIF block must not make the photo unacceptable
        return None


def orientation_of(im: Image.Image, exif: Image.Exif | None = None) -> int:
    if exif is None:
        exif = exif_of(im)
    if exif is None:
        return 1
    value = exif.get(_TAG_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# A camera's date outside these years is a clock that was never set (cameras reset to 1970, 1980 or 2000) or junk:
# ignored, as the device clocks of telemetry are (pzone.telemetry). The bounds also keep every date a UTC datetime.
EXIF_YEARS = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def taken_at_of(exif: Image.Exif | None) -> tuple[datetime | None, bool]:
    """``DateTimeOriginal`` (with its sub-seconds and offset) and whether it had an offset; ``None`` when absent,
    unreadable, or outside :data:`EXIF_YEARS`."""
    taken, has_offset = _exif_datetime(exif)
    if taken is None or not EXIF_YEARS[0] <= taken < EXIF_YEARS[1]:
        return None, False
    return taken, has_offset


def _exif_datetime(exif: Image.Exif | None) -> tuple[datetime | None, bool]:
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
