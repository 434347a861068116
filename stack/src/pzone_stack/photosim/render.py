"""Synthetic photos of a parked e-scooter at a known tilt (Pillow + numpy; nothing downloaded).

The scooter is a small 3D model (wheels, deck, stem, handlebar, fender, kickstand; :mod:`.scooter`) that rolls about
the line through its two tyre contacts, so it always rests on the ground: ``tilt_deg`` is the angle of its vertical
axis (the stem) from vertical, 0 standing, 90 lying on its side. The camera sees it roughly end-on (from behind or in
front, turned by up to ±30°), so a lean to the left or right happens mostly in the image plane, with some
foreshortening when the scooter is turned toward or away from the camera. A phone camera looks down 5–28°, with a
small roll (±5°).

Around it (:mod:`.scene`): a background (wall, bricks, hedge, sky) above a ground line (asphalt, pavement, grass,
gravel) placed where a wall behind the scooter would meet the ground, a soft shadow, sometimes an occluder in front (a
pole, a bag, a bin, a bush; never more than a third of the scooter), and the camera's lighting, colour cast, blur,
noise and JPEG quality.

Every random choice is made up front by :func:`~.params.sample_params` from the caller's
``numpy.random.Generator``; :func:`~.scene.draw` is a pure function of the :class:`~.params.PhotoParams`. This
module puts the two together and encodes the camera's JPEG.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
from PIL import ExifTags, Image

from pzone_stack.photosim.params import Lean, sample_params
from pzone_stack.photosim.scene import draw


def encode_jpeg(image: Image.Image, quality: int, taken_at: datetime | None = None) -> bytes:
    """JPEG bytes; with ``taken_at``, EXIF DateTimeOriginal (+ OffsetTimeOriginal) as a phone writes them."""
    out = io.BytesIO()
    exif = Image.Exif()
    if taken_at is not None:
        moment = taken_at if taken_at.tzinfo is not None else taken_at.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        ifd = exif.get_ifd(ExifTags.IFD.Exif)
        ifd[ExifTags.Base.DateTimeOriginal] = moment.strftime("%Y:%m:%d %H:%M:%S")
        ifd[ExifTags.Base.SubsecTimeOriginal] = f"{moment.microsecond // 1000:03d}"
        ifd[ExifTags.Base.OffsetTimeOriginal] = "+00:00"
    image.save(out, "JPEG", quality=quality, exif=exif.tobytes() if taken_at is not None else b"")
    return out.getvalue()


def lean_of(azimuth_deg: float) -> Lean:
    """The side a device leaning toward ``azimuth_deg`` (its sensor's frame) leans to in a photo: the client walks
    around it to photograph it end-on, so that the lean shows."""
    return "right" if (azimuth_deg % 360.0) < 180.0 else "left"


def render_image(
    tilt_deg: float,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (640, 480),
    lean: Lean | None = None,
) -> Image.Image:
    """A photo (RGB image) of the scooter at ``tilt_deg``; the same ``rng`` state gives the same image."""
    return draw(sample_params(tilt_deg, rng, size=size, lean=lean))


def render_photo(
    tilt_deg: float,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (640, 480),
    lean: Lean | None = None,
    quality: int | None = None,
    taken_at: datetime | None = None,
) -> bytes:
    """The same as :func:`render_image`, as a camera's JPEG (quality sampled unless given, EXIF time if given)."""
    params = sample_params(tilt_deg, rng, size=size, lean=lean, quality=quality)
    return encode_jpeg(draw(params), params.quality, taken_at)
