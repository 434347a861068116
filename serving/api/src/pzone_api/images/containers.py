"""Structure checks before any decoder runs: a JPEG, PNG or WebP file's layout walked, its metadata searched.

JPEG markers up to the end-of-image marker (with the restart markers of the entropy-coded data), PNG chunks with
their CRCs up to ``IEND``, the WebP RIFF container: missing data is ``truncated``, inconsistent data ``corrupt``,
bytes after the image ``polyglot`` (padding and what phones append excepted). The :class:`Layout` gives the header
values that the limits are checked against before Pillow allocates anything; its metadata segments and phone
trailers are then searched for HTML, script, PDF or a ZIP directory (``polyglot``), the compressed image data never.
"""

from __future__ import annotations

import io
import re
import struct
import types
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, NoReturn

from pzone_api.images.bad_image import BadImage
from pzone_api.images.sniffing import PNG_SIGNATURE


@dataclass(slots=True)
class Layout:
    """What the walk found: where the image ends, the header's values, and the metadata to search."""

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


def _jpeg_image(data: bytes, start: int) -> Layout:
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
            return Layout(
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


def _jpeg_layout(data: bytes) -> Layout:
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


def _png_layout(data: bytes) -> Layout:
    n = len(data)
    view = memoryview(data)
    pos = len(PNG_SIGNATURE)
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
            return Layout(
                end=end, width=width, height=height, bits=bit_depth, frames=frames, metadata=metadata
            )
        elif ctype != b"fdAT":
            metadata.append((body, body + length))
        pos = end


def _webp_layout(data: bytes) -> Layout:
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
    return Layout(end=end, width=dims[0], height=dims[1], frames=frames, metadata=metadata)


LAYOUT_READERS: Final[Mapping[str, Callable[[bytes], Layout]]] = types.MappingProxyType(
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


def check_embedded_content(data: bytes, layout: Layout) -> None:
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
