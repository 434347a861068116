"""Synthesized photos and a corpus of bad uploads for ``pzone_api.images``. No image file is committed.

- :func:`photo` / :func:`photo_jpeg` / :func:`photo_png` / :func:`photo_webp`: deterministic "photos" with
  texture at several scales plus fine sensor-like noise, so that JPEG sizes are realistic (about 3 MB for a
  12-megapixel JPEG at quality 90), not the few KB of a flat colour;
- :func:`exif_photo_jpeg`: a JPEG whose stored pixels are rotated, with EXIF Orientation 6, GPS tags,
  DateTimeOriginal + OffsetTimeOriginal, XMP, an ICC profile and a comment;
- :func:`bad_uploads`: one :class:`BadUpload` per kind of upload to refuse, with the ``BadImage.code`` expected;
- :func:`good_edge_cases`: unusual but acceptable uploads, with their expected description.
"""

from __future__ import annotations

import io
import itertools
import random
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from PIL import ExifTags, Image, ImageChops, ImageCms, ImageDraw

RED = (220, 20, 20)
BLOCK = 0.25  # the red block's side, as a fraction of the displayed image's shorter side

EXIF_TAKEN_AT = datetime(2024, 5, 6, 7, 8, 9, 250_000, tzinfo=timezone(timedelta(hours=2)))
GPS_LATITUDE = (52.0, 31.0, 12.5)
GPS_LONGITUDE = (13.0, 24.0, 1.25)
XMP_PACKET = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,31.2083N"/>'
    b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


# ---------------------------------------------------------------------------------------------------------------
# photos


def _noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    return Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))


def photo(width: int, height: int, *, seed: int = 0, fine_noise: int = 24) -> Image.Image:
    """An RGB image that compresses like a photo: smooth shapes at three scales plus fine uniform noise.

    ``fine_noise`` is the amplitude (0-255) of the per-pixel noise; it sets how large the JPEG is.
    Deterministic for a given seed.
    """
    rng = random.Random(seed)
    channels = []
    for _ in range(3):
        acc = Image.new("L", (width, height), 128)
        for div, weight in ((64, 0.6), (16, 0.35), (4, 0.2)):
            small = _noise((max(2, width // div), max(2, height // div)), rng)
            acc = Image.blend(acc, small.resize((width, height), Image.Resampling.BICUBIC), weight)
        if fine_noise:
            fine = _noise((width, height), rng).point(lambda v: 128 + (v - 128) * fine_noise // 255)
            acc = ImageChops.add(acc, fine, 1.0, -128)
        channels.append(acc)
    return Image.merge("RGB", channels)


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def photo_jpeg(width: int, height: int, *, quality: int = 90, seed: int = 0, **params: Any) -> bytes:
    return encode(photo(width, height, seed=seed), "JPEG", quality=quality, **params)


def camera_jpeg(width: int, height: int, *, quality: int = 90, seed: int = 0, **params: Any) -> bytes:
    """Like :func:`photo_jpeg`, with a restart marker after every MCU row, as camera encoders write them."""
    return photo_jpeg(width, height, quality=quality, seed=seed, restart_marker_rows=1, **params)


def photo_png(width: int, height: int, *, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed=seed, fine_noise=0), "PNG")


def photo_webp(width: int, height: int, *, seed: int = 0, quality: int = 85) -> bytes:
    return encode(photo(width, height, seed=seed), "WEBP", quality=quality)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def wide_gamut_icc(description: str = "P-ZONE test wide gamut (P3 primaries)") -> bytes:
    """An RGB display profile (ICC v2, matrix/TRC) with Display P3's primaries and white, gamma 2.2: what phones
    embed in their photos, built here (Pillow can only create sRGB, LAB and XYZ profiles)."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    def text_description(text: str) -> bytes:
        ascii_text = text.encode("ascii") + b"\0"
        return (
            b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)
        )

    gamma = b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", round(2.2 * 256)) + bytes(2)
    tags = [
        (b"desc", text_description(description)),
        (b"cprt", b"text" + bytes(4) + b"none\0\0\0\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        # P3's primaries, adapted to the D50 of the ICC connection space (as in Apple's Display P3 profile)
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        padded = body + bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += padded
    body = struct.pack(">I", len(tags)) + table + data
    header = (
        struct.pack(">I", 128 + len(body))
        + b"lcms"
        + bytes([2, 0x10, 0, 0])  # version 2.1
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8 + 4)  # platform, flags, manufacturer, model, attributes, rendering intent
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)  # the connection space's illuminant, D50
        + bytes(4 + 16 + 28)  # creator, profile id, reserved
    )
    assert len(header) == 128
    return header + body


def displayed_with_red_corner(width: int = 300, height: int = 400) -> Image.Image:
    """The picture as it should be seen: a photo with a red block in its top-left corner."""
    im = photo(width, height, seed=7, fine_noise=8)
    side = int(min(width, height) * BLOCK)
    ImageDraw.Draw(im).rectangle((0, 0, side - 1, side - 1), fill=RED)
    return im


def exif_photo_jpeg(
    *,
    width: int = 300,
    height: int = 400,
    with_offset: bool = True,
    quality: int = 92,
) -> bytes:
    """A JPEG shot "sideways": stored rotated 90° anticlockwise, with EXIF Orientation 6 to turn it back.

    Displayed correctly (rotated 90° clockwise, as ``ImageOps.exif_transpose`` does), it is ``width`` x ``height``
    with the red block of :func:`displayed_with_red_corner` in the **top-left** corner; the stored pixels are
    ``height`` x ``width`` with the block in the bottom-left corner. It also carries GPS tags, DateTimeOriginal
    (:data:`EXIF_TAKEN_AT`, with ``OffsetTimeOriginal`` unless ``with_offset`` is false), XMP, an sRGB ICC
    profile and a comment: everything that derivatives must not keep.
    """
    stored = displayed_with_red_corner(width, height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "P-ZONE Test Camera"
    exif[ExifTags.Base.Model] = "Synth 1"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = EXIF_TAKEN_AT.strftime("%Y:%m:%d %H:%M:%S")
    sub[ExifTags.Base.SubsecTimeOriginal] = "25"
    if with_offset:
        sub[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = GPS_LONGITUDE
    return encode(
        stored,
        "JPEG",
        quality=quality,
        exif=exif,
        xmp=XMP_PACKET,
        icc_profile=srgb_icc(),
        comment=b"shot by a test",
    )


# ---------------------------------------------------------------------------------------------------------------
# building blocks for hand-made files


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def raw_png(width: int, height: int, *, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


@lru_cache(maxsize=1)
def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit ``side`` x ``side`` PNG of zeros: about 110 KB that decode to ``side``² pixels."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_chunk = 1000
    parts = [compressor.compress(row * rows_per_chunk) for _ in range(side // rows_per_chunk)]
    parts.append(compressor.compress(row * (side % rows_per_chunk)))
    parts.append(compressor.flush())
    return raw_png(side, side, bit_depth=1, color_type=0, idat=b"".join(parts))


def jpeg_with_sof(
    data: bytes, *, width: int | None = None, height: int | None = None, precision: int | None = None
) -> bytes:
    """``data`` (a baseline JPEG from Pillow) with its frame header's values overwritten."""
    pos = data.index(b"\xff\xc0") + 4  # marker, length
    out = bytearray(data)
    if precision is not None:
        out[pos] = precision
    if height is not None:
        out[pos + 1 : pos + 3] = struct.pack(">H", height)
    if width is not None:
        out[pos + 3 : pos + 5] = struct.pack(">H", width)
    return bytes(out)


def jpeg_corrupt_scan(data: bytes, *, seed: int = 3, length: int | None = None) -> bytes:
    """``data`` with random bytes written over the middle of its entropy-coded data.

    By default ``length`` is a little more than the longest restart interval when the JPEG has restart markers
    (so the damage always covers one), else 600 bytes.
    """
    scan_start = data.index(b"\xff\xda")
    if length is None:
        restarts = [m.start() for m in re.finditer(rb"\xff[\xd0-\xd7]", data)]
        gaps = [b - a for a, b in itertools.pairwise(restarts)]
        length = max(gaps) + 16 if gaps else 600
    middle = scan_start + (len(data) - scan_start) // 2
    out = bytearray(data)
    out[middle : middle + length] = random.Random(seed).randbytes(length)
    return bytes(out)


def zip_archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def samsung_trailer(blocks: list[tuple[int, bytes, bytes]] | None = None) -> bytes:
    """A Samsung SEF trailer as Galaxy phones append after the JPEG: ``(type, name, payload)`` blocks, then the
    ``SEFH`` directory (entries give each block's offset back from the directory), its length and ``SEFT``."""
    if blocks is None:
        blocks = [(0x0A01, b"Image_UTC_Data", b"1714979289123")]
    data = bytearray()
    entries = []
    for kind, name, payload in blocks:
        block = struct.pack("<HHI", 0, kind, len(name)) + name + payload
        entries.append((kind, len(data), len(block)))
        data += block
    directory = b"SEFH" + struct.pack("<II", 101, len(entries))
    directory += b"".join(struct.pack("<HHII", 0, kind, len(data) - at, size) for kind, at, size in entries)
    return bytes(data) + directory + struct.pack("<I", len(directory)) + b"SEFT"


def mp4_box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def motion_photo_video(extra: bytes = b"") -> bytes:
    """A small MP4-shaped box sequence (``ftyp``, ``moov``, ``mdat``), like the video a Google Motion Photo appends.

    ``extra`` goes into a ``free`` box at the end."""
    video = (
        mp4_box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
        + mp4_box(b"moov", mp4_box(b"mvhd", bytes(100)))
        + mp4_box(b"mdat", random.Random(11).randbytes(5000))
    )
    return video + mp4_box(b"free", extra) if extra else video


HTML_PAYLOAD = b"<!DOCTYPE html><html><body><script>fetch('/api/me').then(r=>r.text()).then(alert)</script></body></html>"
SVG_PAYLOAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" '
    b'onload="alert(document.cookie)"><rect width="10" height="10"/></svg>\n'
)


# ---------------------------------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class BadUpload:
    name: str  # what the client called it (never used to detect anything)
    data: bytes
    declared_content_type: str | None
    expected_code: str


@dataclass(frozen=True)
class GoodUpload:
    name: str
    data: bytes
    declared_content_type: str | None
    content_type: str
    width: int  # as displayed
    height: int
    mode: str


def bad_uploads() -> list[BadUpload]:
    """Every kind of upload to refuse, each with the ``BadImage.code`` that ``inspect_image`` must give."""
    small = photo(64, 48, seed=1)
    jpeg = encode(small, "JPEG", quality=90)
    png = encode(small, "PNG")
    webp = encode(small, "WEBP", quality=80)
    frame2 = Image.new("RGB", small.size, (0, 90, 200))
    gif_frames = [small.convert("P"), frame2.convert("P")]
    tiny_jpeg = encode(Image.new("RGB", (32, 32), (40, 80, 120)), "JPEG")
    # A GIF whose logical screen is 65535 x 65535, holding a 1 x 1 image.
    gif_bomb = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    gif_bomb[6:10] = struct.pack("<HH", 0xFFFF, 0xFFFF)
    png_bad_crc = bytearray(png)
    idat = png.index(b"IDAT")
    png_bad_crc[idat + 20] ^= 0x01
    rgb16_rows = b"".join(b"\x00" + bytes(range(192)) for _ in range(32))  # 32 x 32 RGB, 16 bits per sample
    return [
        BadUpload("empty.jpg", b"", "image/jpeg", "empty"),
        BadUpload("truncated.jpg", jpeg[: len(jpeg) // 2], "image/jpeg", "truncated"),
        BadUpload("no-end-marker.jpg", jpeg[:-2], "image/jpeg", "truncated"),
        BadUpload("truncated.png", png[: len(png) - 40], "image/png", "truncated"),
        BadUpload("truncated.webp", webp[: len(webp) * 2 // 3], "image/webp", "truncated"),
        BadUpload(
            "text.jpg",
            b"This is not a photo, just some notes about scooter 42.\n" * 20,
            "image/jpeg",
            "not_an_image",
        ),
        BadUpload("random.jpg", random.Random(5).randbytes(4096), "image/jpeg", "not_an_image"),
        BadUpload("archive.jpg", zip_archive({"a.txt": b"hello"}), "image/jpeg", "not_an_image"),
        BadUpload("page.jpg", HTML_PAYLOAD, "image/jpeg", "active_content"),
        BadUpload(
            "page-bom.png", b"\xef\xbb\xbf  \n<html><body>hi</body></html>", "image/png", "active_content"
        ),
        BadUpload("drawing.svg", SVG_PAYLOAD, "image/svg+xml", "active_content"),
        BadUpload("drawing.png", SVG_PAYLOAD.split(b"\n", 1)[1], "image/png", "active_content"),
        BadUpload("data.xml", b'<?xml version="1.0"?><root><a>1</a></root>', "image/jpeg", "active_content"),
        BadUpload(
            "document.pdf",
            b"%PDF-1.7\n1 0 obj<</Type/Catalog>>endobj\ntrailer<<>>\n%%EOF\n",
            "application/pdf",
            "active_content",
        ),
        BadUpload("bomb.png", png_bomb(), "image/png", "too_many_pixels"),
        BadUpload(
            "bomb.jpg", jpeg_with_sof(tiny_jpeg, width=65_000, height=65_000), "image/jpeg", "too_many_pixels"
        ),
        BadUpload(
            "strip.png", encode(Image.new("L", (20_000, 10), 90), "PNG"), "image/png", "too_large_dimensions"
        ),
        BadUpload(
            "tall.jpg", encode(Image.new("L", (8, 13_000), 90), "JPEG"), "image/jpeg", "too_large_dimensions"
        ),
        BadUpload(
            "pixel.png",
            encode(Image.new("RGB", (1, 1), (255, 255, 255)), "PNG"),
            "image/png",
            "too_small_dimensions",
        ),
        BadUpload(
            "sliver.jpg", encode(Image.new("L", (640, 31), 90), "JPEG"), "image/jpeg", "too_small_dimensions"
        ),
        BadUpload(
            "tiny.webp",
            encode(Image.new("RGB", (16, 16), (9, 9, 9)), "WEBP"),
            "image/webp",
            "too_small_dimensions",
        ),
        BadUpload("photo.gif", encode(small.convert("P"), "GIF"), "image/gif", "unsupported_format"),
        BadUpload("bomb.gif", bytes(gif_bomb), "image/gif", "unsupported_format"),
        BadUpload(
            "animated.gif",
            encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], loop=0),
            "image/gif",
            "unsupported_format",
        ),
        BadUpload("photo.bmp", encode(small, "BMP"), "image/bmp", "unsupported_format"),
        BadUpload("photo.tiff", encode(small, "TIFF"), "image/tiff", "unsupported_format"),
        BadUpload("photo.avif", encode(small, "AVIF", quality=50), "image/avif", "unsupported_format"),
        BadUpload(
            "photo.heic",
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
            "image/heic",
            "unsupported_format",
        ),
        BadUpload("cmyk.jpg", encode(small.convert("CMYK"), "JPEG"), "image/jpeg", "unsupported_mode"),
        BadUpload(
            "grey16.png", encode(Image.new("I;16", (48, 40), 40_000), "PNG"), "image/png", "unsupported_mode"
        ),
        BadUpload(
            "rgb16.png",
            raw_png(32, 32, bit_depth=16, color_type=2, idat=zlib.compress(rgb16_rows)),
            "image/png",
            "unsupported_mode",
        ),
        BadUpload("twelve-bit.jpg", jpeg_with_sof(tiny_jpeg, precision=12), "image/jpeg", "unsupported_mode"),
        BadUpload("grey-alpha.png", encode(small.convert("LA"), "PNG"), "image/png", "unsupported_mode"),
        BadUpload(
            "animated.webp",
            encode(small, "WEBP", save_all=True, append_images=[frame2], duration=100),
            "image/webp",
            "animated",
        ),
        BadUpload(
            "animated.png",
            encode(small, "PNG", save_all=True, append_images=[frame2], duration=100),
            "image/png",
            "animated",
        ),
        BadUpload("png-as-jpeg.jpg", png, "image/jpeg", "type_mismatch"),
        BadUpload("jpeg-as-octets.jpg", jpeg, "application/octet-stream", "type_mismatch"),
        BadUpload("webp-as-png.png", webp, "image/png", "type_mismatch"),
        BadUpload("jpeg-zip.jpg", jpeg + zip_archive({"index.html": HTML_PAYLOAD}), "image/jpeg", "polyglot"),
        BadUpload("jpeg-html.jpg", jpeg + HTML_PAYLOAD, "image/jpeg", "polyglot"),
        BadUpload(
            "jpeg-pdf.jpg",
            encode(small, "JPEG", comment=b"%PDF-1.4\n1 0 obj<<>>endobj"),
            "image/jpeg",
            "polyglot",
        ),
        BadUpload(
            "jpeg-script.jpg",
            encode(small, "JPEG", comment=b"<script>alert(1)</script>"),
            "image/jpeg",
            "polyglot",
        ),
        BadUpload(
            "png-zip.png",
            png + zip_archive({"x.php": b"<?php system($_GET['c']); ?>"}),
            "image/png",
            "polyglot",
        ),
        BadUpload("webp-html.webp", webp + HTML_PAYLOAD, "image/webp", "polyglot"),
        BadUpload(
            "jpeg-fake-samsung.jpg",
            jpeg + HTML_PAYLOAD + struct.pack("<I", 12) + b"SEFT",
            "image/jpeg",
            "polyglot",
        ),
        BadUpload(
            "jpeg-samsung-html.jpg",
            jpeg + samsung_trailer([(0x0A01, b"x", HTML_PAYLOAD)]),
            "image/jpeg",
            "polyglot",
        ),
        BadUpload("jpeg-mp4-html.jpg", jpeg + motion_photo_video(HTML_PAYLOAD), "image/jpeg", "polyglot"),
        BadUpload(
            "jpeg-mp4-zip.jpg",
            jpeg + motion_photo_video(zip_archive({"a.js": b"x"})),
            "image/jpeg",
            "polyglot",
        ),
        BadUpload("jpeg-mp4-junk.jpg", jpeg + motion_photo_video() + b"junk", "image/jpeg", "polyglot"),
        # Camera JPEGs have restart markers (here every MCU row); damage to the scan breaks their sequence.
        BadUpload("corrupt-scan.jpg", jpeg_corrupt_scan(camera_jpeg(320, 240)), "image/jpeg", "corrupt"),
        # Without restart markers only marker-like bytes in the damage give it away (seed 0 has some).
        BadUpload(
            "corrupt-scan-plain.jpg",
            jpeg_corrupt_scan(photo_jpeg(320, 240, seed=2), seed=0),
            "image/jpeg",
            "corrupt",
        ),
        BadUpload("bad-crc.png", bytes(png_bad_crc), "image/png", "corrupt"),
    ]


def good_edge_cases() -> list[GoodUpload]:
    """Unusual uploads that must be accepted, with what ``inspect_image`` must report."""
    small = photo(64, 48, seed=4)
    palette = small.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(small.size))
    mpo = encode(small, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 24), (9, 9, 9))])

    def good(
        name: str, data: bytes, declared: str | None, size: tuple[int, int] = (64, 48), mode: str = "RGB"
    ) -> GoodUpload:
        content_type = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"RI": "image/webp"}[data[:2]]
        return GoodUpload(name, data, declared, content_type, size[0], size[1], mode)

    smallest = Image.new("RGB", (32, 32), (1, 2, 3))  # MIN_SIDE: anything smaller is refused
    return [
        good("smallest.jpg", encode(smallest, "JPEG"), "image/jpeg", (32, 32)),
        good("smallest.png", encode(smallest, "PNG"), "image/png", (32, 32)),
        good("smallest.webp", encode(smallest, "WEBP"), "image/webp", (32, 32)),
        good("grey.jpg", encode(small.convert("L"), "JPEG"), "image/jpeg", mode="L"),
        good("grey.png", encode(small.convert("L"), "PNG"), "image/png", mode="L"),
        good("palette-transparent.png", encode(palette, "PNG"), "image/png", mode="P"),
        good("alpha.png", encode(rgba, "PNG"), "image/png", mode="RGBA"),
        good("alpha.webp", encode(rgba, "WEBP", lossless=True), "image/webp", mode="RGBA"),
        good("progressive.jpg", encode(small, "JPEG", progressive=True), "image/jpeg"),
        good("camera.jpg", camera_jpeg(64, 48), "image/jpeg"),
        good("camera-progressive.jpg", camera_jpeg(64, 48, progressive=True), "image/jpeg"),
        good("padded.jpg", encode(small, "JPEG") + bytes(100), "image/jpeg"),
        good("multi-picture.jpg", mpo, "image/jpeg"),  # MPF: a second JPEG after the first one's end
        good("samsung.jpg", encode(small, "JPEG") + samsung_trailer(), "image/jpeg"),
        good("motion-photo.jpg", encode(small, "JPEG") + motion_photo_video(), "image/jpeg"),
        good("motion-photo-mpf.jpg", mpo + motion_photo_video(), "image/jpeg"),
        good("alias.jpg", encode(small, "JPEG"), "image/jpg"),
        good("params.jpg", encode(small, "JPEG"), "IMAGE/JPEG; charset=binary"),
        good("undeclared.png", encode(small, "PNG"), None),
        good("max-side.png", encode(Image.new("L", (12_000, 32), 5), "PNG"), "image/png", (12_000, 32), "L"),
        good("exif-rotated.jpg", exif_photo_jpeg(), "image/jpeg", (300, 400)),
    ]
