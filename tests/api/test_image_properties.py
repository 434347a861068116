"""Property-based: whatever bytes an upload holds, the image checks answer an acceptable photo (its info and
derivatives) or a refusal (:class:`BadImage` with a stable code), never another exception, which the worker would
turn into a 500 with its row half-processed. Hypothesis generates the uploads: random bytes, valid JPEG/PNG/WebP
photos with bytes flipped, cut short or spliced together, and EXIF dates from any year. Bounded budgets (examples,
no deadline on a 2-core CI machine)."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pzone_api.images import BadImage, inspect_and_derive
from pzone_api.images.bad_image import BAD_IMAGE_CODES
from pzone_api.images.decoding import EXIF_YEARS
from pzone_api.intake import DERIVATIVE_SIZES
from tests.support.images import encode, photo

pytestmark = pytest.mark.unit

BUDGET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = photo(48, 36, seed=3)
VALID = {
    "image/jpeg": encode(SMALL, "JPEG", quality=85),
    "image/png": encode(SMALL, "PNG"),
    "image/webp": encode(SMALL, "WEBP", quality=80),
}


def check(data: bytes, declared: str | None) -> None:
    """The one property: an accepted photo is a sane one; anything else is a BadImage with a known code."""
    try:
        info, derivatives = inspect_and_derive(
            data,
            declared_content_type=declared,
            max_pixels=4_000_000,
            max_side=4_000,
            sizes=DERIVATIVE_SIZES,
            model_size=32,
        )
    except BadImage as exc:
        assert exc.code in BAD_IMAGE_CODES and exc.reason
        return
    assert info.content_type == declared or declared is None
    assert 0 < info.width <= 4_000 and 0 < info.height <= 4_000
    assert {"thumb", "preview", "model"} <= set(derivatives)
    assert all(Image.open(io.BytesIO(derivatives[name])).size for name in ("thumb", "preview"))


declared_types = st.sampled_from((*VALID, None, "image/gif", "text/html"))


@BUDGET
@given(data=st.binary(max_size=2048), declared=declared_types)
def test_random_bytes_are_refused_with_a_code(data: bytes, declared: str | None) -> None:
    check(data, declared)


@BUDGET
@given(
    kind=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    tail=st.binary(max_size=64),
    declared=declared_types,
)
def test_a_spoiled_photo_is_a_photo_or_a_refusal(
    kind: str, flips: list[tuple[int, int]], cut: int | None, tail: bytes, declared: str | None
) -> None:
    data = bytearray(VALID[kind])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    check(bytes(data) + tail, declared)


@settings(max_examples=60, deadline=None)
@given(
    taken=st.one_of(
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        st.text(max_size=24),
    ),
    offset=st.one_of(st.none(), st.text(max_size=8), st.sampled_from(("+14:00", "-12:00", "+99:99", "Z"))),
)
def test_any_exif_date_is_read_or_ignored(taken: datetime | str, offset: str | None) -> None:
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S") if isinstance(taken, datetime) else taken
    if offset is not None:
        exif_ifd[0x9011] = offset
    data = encode(SMALL, "JPEG", quality=85, exif=exif)
    try:
        info, _ = inspect_and_derive(
            data,
            declared_content_type="image/jpeg",
            max_pixels=4_000_000,
            max_side=4_000,
            sizes=DERIVATIVE_SIZES,
        )
    except BadImage as exc:
        assert exc.code in BAD_IMAGE_CODES
        return
    taken = info.exif_taken_at
    assert taken is None or (taken.tzinfo is not None and EXIF_YEARS[0] <= taken < EXIF_YEARS[1])
