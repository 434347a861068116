"""Photo checks and derivatives (pzone_api.images): the bad-upload corpus, good edge cases, EXIF, speed guards."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFile, ImageOps, ImageStat

from pzone.preprocess import to_srgb
from pzone_api.images import (
    BAD_IMAGE_CODES,
    DEFAULT_SIZES,
    BadImage,
    ImageInfo,
    inspect_and_derive,
    inspect_image,
    make_derivatives,
    sha256_file,
)
from tests.support.images import (
    EXIF_TAKEN_AT,
    RED,
    BadUpload,
    GoodUpload,
    bad_uploads,
    camera_jpeg,
    displayed_with_red_corner,
    encode,
    exif_photo_jpeg,
    good_edge_cases,
    photo,
    png_bomb,
)

pytestmark = pytest.mark.unit

MAX_PIXELS = 40_000_000  # Settings.image_max_pixels' default
MAX_SIDE = 12_000  # Settings.image_max_side's default

BAD = bad_uploads()
GOOD = good_edge_cases()


def inspect(data: bytes | Path, declared: str | None = "image/jpeg", **limits: Any) -> ImageInfo:
    limits = {"max_pixels": MAX_PIXELS, "max_side": MAX_SIDE, **limits}
    return inspect_image(data, declared_content_type=declared, **limits)


def jpeg_markers(data: bytes) -> list[int]:
    """Markers of a JPEG's segments, from SOI up to the first SOS."""
    assert data.startswith(b"\xff\xd8")
    pos, markers = 2, []
    while True:
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length


def assert_clean_jpeg(data: bytes, box: int) -> Image.Image:
    """A baseline JPEG within ``box`` with no metadata at all; returns it decoded."""
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert max(im.size) <= box
    assert len(im.getexif()) == 0
    assert not {"exif", "xmp", "icc_profile", "comment", "photoshop", "adobe"} & set(im.info)
    # Only the JFIF APP0 header, quantization/Huffman tables and the frame header: no APP1-15 and no COM.
    extra = [m for m in jpeg_markers(data) if (0xE1 <= m <= 0xEF) or m == 0xFE]
    assert extra == []
    for needle in (b"Exif\x00\x00", b"http://ns.adobe.com/xap", b"ICC_PROFILE", b"GPS", b"shot by a test"):
        assert needle not in data
    im.load()
    return im


def coarse_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel after averaging both images down to 12 x 16 (or 16 x 12)."""
    size = (12, 16) if a.height > a.width else (16, 12)
    small_a, small_b = (im.convert("RGB").resize(size, Image.Resampling.BOX) for im in (a, b))
    return max(ImageStat.Stat(ImageChops.difference(small_a, small_b)).mean)


def is_red(pixel: Any) -> bool:
    r, g, b = pixel
    return r > 170 and g < 80 and b < 80


# ---------------------------------------------------------------------------------------------------------------
# the bad-upload corpus


def test_corpus_covers_many_kinds_and_every_code() -> None:
    names = [b.name for b in BAD]
    assert len(BAD) >= 20
    assert len(set(names)) == len(names)
    codes = {b.expected_code for b in BAD}
    assert codes <= set(BAD_IMAGE_CODES)
    assert set(BAD_IMAGE_CODES) - codes == {"too_large"}  # needs max_bytes: see test_max_bytes


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.name)
def test_bad_upload_is_refused(bad: BadUpload) -> None:
    with pytest.raises(BadImage) as caught:
        inspect(bad.data, bad.declared_content_type)
    assert caught.value.code == bad.expected_code, caught.value.reason
    assert caught.value.reason.strip()
    assert isinstance(caught.value, ValueError)


def test_bad_uploads_are_refused_from_files_too(tmp_path: Path) -> None:
    for i, bad in enumerate(BAD):
        path = tmp_path / f"{i}-{bad.name}"  # the name (and its extension) must not matter
        path.write_bytes(bad.data)
        with pytest.raises(BadImage) as caught:
            inspect(path, bad.declared_content_type)
        assert caught.value.code == bad.expected_code, bad.name


def test_make_derivatives_refuses_what_it_cannot_read() -> None:
    for bad in BAD:
        if bad.expected_code in ("empty", "not_an_image", "active_content", "unsupported_format"):
            with pytest.raises(BadImage) as caught:
                make_derivatives(bad.data)
            assert caught.value.code == bad.expected_code, bad.name


def test_the_pixel_bomb_fails_fast_without_allocating() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000  # 30000 x 30000 pixels in about 110 KB
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for check in (lambda: inspect(bomb, "image/png"), lambda: make_derivatives(bomb)):
        started = time.perf_counter()
        with pytest.raises(BadImage) as caught:
            check()
        assert time.perf_counter() - started < 0.5
        assert caught.value.code == "too_many_pixels"
    # Decoding it would take 900 MB (Pillow stores 1-bit images a byte per pixel).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000


@pytest.mark.parametrize(("max_pixels", "expected"), [(60, "warning"), (40, "error"), (100, None)])
def test_pillow_bomb_guard_is_an_error_at_the_limit(max_pixels: int, expected: str | None) -> None:
    # make_derivatives relies on Pillow's own guard: 100 pixels is over 60 (Pillow only warns: made an error
    # here) and over 2 x 40 (Pillow's DecompressionBombError).
    saved = Image.MAX_IMAGE_PIXELS
    png = encode(Image.new("RGB", (10, 10), (1, 2, 3)), "PNG")
    if expected is None:
        assert set(make_derivatives(png, max_pixels=max_pixels)) == set(DEFAULT_SIZES)
    else:
        with pytest.raises(BadImage) as caught:
            make_derivatives(png, max_pixels=max_pixels)
        assert caught.value.code == "too_many_pixels"
    assert saved == Image.MAX_IMAGE_PIXELS


def test_pillow_limit_does_not_leak_between_threads() -> None:
    saved = Image.MAX_IMAGE_PIXELS
    png = encode(photo(64, 48), "PNG")  # 3072 pixels

    def call(i: int) -> str:
        limit = 2_000 if i % 2 else 5_000  # odd calls must fail, even ones must pass
        try:
            make_derivatives(png, sizes={"t": 32}, max_pixels=limit)
        except BadImage as e:
            return e.code
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(64)))
    assert results == ["ok" if i % 2 == 0 else "too_many_pixels" for i in range(64)]
    assert saved == Image.MAX_IMAGE_PIXELS


def test_max_bytes(tmp_path: Path) -> None:
    data = camera_jpeg(64, 48)
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    for source in (data, path):
        with pytest.raises(BadImage) as caught:
            inspect(source, max_bytes=len(data) - 1)
        assert caught.value.code == "too_large"
        assert inspect(source, max_bytes=len(data)).size_bytes == len(data)


def test_truncation_check_needs_pillows_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        inspect(camera_jpeg(64, 48))


# ---------------------------------------------------------------------------------------------------------------
# good uploads


@pytest.mark.parametrize("good", GOOD, ids=lambda g: g.name)
def test_good_upload_is_accepted(good: GoodUpload) -> None:
    info = inspect(good.data, good.declared_content_type)
    assert (info.content_type, info.width, info.height, info.mode) == (
        good.content_type,
        good.width,
        good.height,
        good.mode,
    )
    assert info.format == {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}[good.content_type]
    assert info.size_bytes == len(good.data)

    derivatives = make_derivatives(good.data)
    assert list(derivatives) == list(DEFAULT_SIZES)
    for name, box in DEFAULT_SIZES.items():
        im = assert_clean_jpeg(derivatives[name], box)
        # Same aspect ratio as displayed, never enlarged.
        scale = min(1.0, box / max(good.width, good.height))
        assert im.size == (max(1, round(good.width * scale)), max(1, round(good.height * scale)))


def test_transparency_is_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (40, 30), (200, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 30))  # left half fully transparent black
    for fmt, params in (("PNG", {}), ("WEBP", {"lossless": True})):
        thumb = Image.open(io.BytesIO(make_derivatives(encode(rgba, fmt, **params))["thumb"]))
        left, right = thumb.getpixel((5, 15)), thumb.getpixel((35, 15))
        assert isinstance(left, tuple) and min(left) > 240, fmt
        assert is_red(right), fmt


# ---------------------------------------------------------------------------------------------------------------
# EXIF


def test_exif_orientation_dimensions_and_taken_at() -> None:
    info = inspect(exif_photo_jpeg())
    assert info.orientation == 6
    assert (info.width, info.height) == (300, 400)  # stored as 400 x 300
    assert info.exif_taken_at == EXIF_TAKEN_AT
    assert info.exif_taken_at_has_offset


def test_exif_taken_at_without_offset_is_read_as_utc() -> None:
    info = inspect(exif_photo_jpeg(with_offset=False))
    assert info.exif_taken_at == EXIF_TAKEN_AT.replace(tzinfo=UTC)
    assert info.exif_taken_at is not None and info.exif_taken_at.utcoffset() is not None
    assert not info.exif_taken_at_has_offset
    assert inspect(camera_jpeg(48, 32)).exif_taken_at is None


@pytest.mark.parametrize(
    ("written", "offset", "expected"),
    [
        (
            "2026:11:20 10:00:00",
            "+14:00",
            datetime(2026, 11, 19, 20, 0, tzinfo=UTC),
        ),  # the far offsets are real
        ("2026:11:20 10:00:00", "-12:00", datetime(2026, 11, 20, 22, 0, tzinfo=UTC)),
        ("2026:11:20 10:00:00", "+05:45", datetime(2026, 11, 20, 4, 15, tzinfo=UTC)),  # Nepal
        ("2026:11:20 10:00:00", "+99:99", datetime(2026, 11, 20, 10, 0, tzinfo=UTC)),  # a bad offset: as UTC
        ("0001:01:01 00:00:00", "+14:00", None),  # no UTC datetime at all: it used to fail the whole upload
        ("9999:12:31 23:00:00", "-12:00", None),
        ("1980:01:01 00:00:00", None, None),  # a camera clock never set
        ("1999:12:31 23:59:59", None, None),
        ("2000:01:01 00:00:00", None, datetime(2000, 1, 1, tzinfo=UTC)),
        ("2100:01:01 00:00:00", None, None),
    ],
)
def test_exif_dates_outside_the_plausible_years_or_utc_are_ignored(
    written: str, offset: str | None, expected: datetime | None
) -> None:
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = written
    if offset is not None:
        exif_ifd[0x9011] = offset
    taken = inspect(encode(photo(64, 48), "JPEG", quality=85, exif=exif)).exif_taken_at
    assert taken == expected
    if taken is not None:
        taken.astimezone(UTC)  # always a representable UTC moment


def test_derivatives_are_upright_and_carry_no_metadata() -> None:
    source = exif_photo_jpeg(width=600, height=800)
    stored = Image.open(io.BytesIO(source))
    assert stored.size == (800, 600)
    assert stored.getexif()[0x0112] == 6 and stored.getexif().get_ifd(0x8825)  # GPS is there to be removed
    # In the stored pixels the block is bottom-left, not top-left.
    assert not is_red(stored.convert("RGB").getpixel((5, 5)))

    expected = ImageOps.exif_transpose(stored).convert("RGB")
    assert expected.size == (600, 800)
    assert is_red(expected.getpixel((5, 5)))

    derivatives = make_derivatives(source, sizes={"thumb": 256, "preview": 1024, "small": 64})
    sizes = {"thumb": (192, 256), "preview": (600, 800), "small": (48, 64)}
    for name, data in derivatives.items():
        im = assert_clean_jpeg(data, max(sizes[name]))
        assert im.size == sizes[name]
        w, h = im.size
        corner = max(2, int(min(w, h) * 0.25) // 3)
        assert is_red(im.getpixel((corner, corner))), name  # top-left, as displayed
        for x, y in ((w - 1 - corner, corner), (corner, h - 1 - corner), (w - 1 - corner, h - 1 - corner)):
            assert not is_red(im.getpixel((x, y))), (name, x, y)
        # And the same picture as ImageOps.exif_transpose gives (compared coarsely: resampling paths differ).
        assert coarse_difference(im, expected) < 6, name
        assert coarse_difference(im, expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) > 10, name


def test_inspect_and_derive_is_both_in_one_decode() -> None:
    source = exif_photo_jpeg()
    info, derivatives = inspect_and_derive(
        source, declared_content_type="image/jpeg", max_pixels=MAX_PIXELS, max_side=MAX_SIDE
    )
    assert info == inspect(source)
    separate = make_derivatives(source)
    assert list(derivatives) == list(separate)
    for name in derivatives:
        assert Image.open(io.BytesIO(derivatives[name])).size == Image.open(io.BytesIO(separate[name])).size
    with pytest.raises(BadImage) as caught:
        inspect_and_derive(
            BAD[1].data, declared_content_type="image/jpeg", max_pixels=MAX_PIXELS, max_side=MAX_SIDE
        )
    assert caught.value.code == BAD[1].expected_code


# ---------------------------------------------------------------------------------------------------------------
# speed: draft decoding


def spy_decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    original: Callable[[ImageFile.ImageFile], Any] = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        decodes = bool(self.tile)  # later calls (from resize, convert, ...) find nothing left to decode
        result = original(self)
        if decodes:
            sizes.append(self.size)
        return result

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return sizes


def test_large_jpegs_are_decoded_at_reduced_size(monkeypatch: pytest.MonkeyPatch) -> None:
    source = camera_jpeg(2400, 1800, quality=85)
    decoded = spy_decoded_sizes(monkeypatch)

    derivatives = make_derivatives(source)
    assert decoded == [(1200, 900)]  # DCT scaling by 1/2: the largest reduction that still covers 1024 x 768
    assert Image.open(io.BytesIO(derivatives["preview"])).size == (1024, 768)
    assert Image.open(io.BytesIO(derivatives["thumb"])).size == (256, 192)

    decoded.clear()
    make_derivatives(source, sizes={"thumb": 256})
    assert decoded == [(300, 225)]  # 1/8

    decoded.clear()
    assert inspect(source).width == 2400
    assert decoded == [(300, 225)]  # the check decodes all the data, at 1/8 scale


# ---------------------------------------------------------------------------------------------------------------
# arguments and helpers


def test_declared_type_spellings() -> None:
    jpeg = camera_jpeg(48, 32)
    for declared in ("image/jpeg", "image/jpg", "image/pjpeg", " Image/JPEG ; charset=binary", None):
        assert inspect(jpeg, declared).content_type == "image/jpeg"
    for declared in ("", "image/png", "text/html", "image/jpeg2000"):
        with pytest.raises(BadImage) as caught:
            inspect(jpeg, declared)
        assert caught.value.code == "type_mismatch"


def test_derivative_arguments(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(camera_jpeg(400, 300))
    out = make_derivatives(path, sizes={"a": 100, "b": 100, "c": 50}, quality=60)
    assert out["a"] == out["b"]
    assert Image.open(io.BytesIO(out["c"])).size == (50, 38)
    with pytest.raises(ValueError):
        make_derivatives(path, sizes={})
    with pytest.raises(ValueError):
        make_derivatives(path, sizes={"x": 0})
    with pytest.raises(ValueError):
        make_derivatives(path, quality=0)


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_red_corner_fixture_is_what_the_orientation_test_assumes() -> None:
    displayed = displayed_with_red_corner(300, 400)
    assert displayed.getpixel((0, 0)) == RED
    assert datetime(2024, 5, 6, 5, 8, 9, 250_000, tzinfo=UTC) == EXIF_TAKEN_AT


def test_colour_profiles_that_cannot_be_converted_are_dropped() -> None:
    im = Image.new("RGB", (4, 4), (10, 20, 30))
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (None, b"", b"not a profile", lab, srgb):
        assert to_srgb(im, icc) is im
