"""The intake benchmark's size fit: the line of API CPU per upload against the photo's size, per upload path."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.intake import size_fit

pytestmark = pytest.mark.unit


def measured(
    presigned: tuple[float, float], proxied: tuple[float, float], base64: tuple[float, float]
) -> Any:
    """Results as the benchmark has them: API CPU seconds at 3 MB and at 9 MB, per path."""
    results: dict[str, Any] = {"photo_mb": 3.0, "large_photo_mb": 9.0}
    for path, (small, large) in (("presigned", presigned), ("proxied", proxied), ("base64", base64)):
        results[f"{path}_api_cpu_s"] = small
        results[f"large_{path}_api_cpu_s"] = large
    return results


def test_lines_through_both_sizes_and_the_crossover() -> None:
    # presigned flat at 10 ms; proxied 10 ms fixed + 1 ms per MB: 3x below it from 20 MB (30 = 10 + 20 * 1)
    fit = size_fit(measured((0.010, 0.010), (0.013, 0.019), (0.019, 0.037)))
    assert fit["presigned_api_cpu_s_per_mb"] == pytest.approx(0.0)
    assert fit["proxied_api_cpu_s_per_mb"] == pytest.approx(0.001)
    assert fit["proxied_api_cpu_fixed_s"] == pytest.approx(0.010)
    assert fit["base64_api_cpu_s_per_mb"] == pytest.approx(0.003)
    assert fit["presigned_3x_below_proxied_from_mb"] == pytest.approx(20.0)


def test_a_presigned_path_that_grows_moves_the_crossover_out() -> None:
    # presigned 10 ms + 0.2 ms/MB: 3 (10 + 0.2 m) = 10 + m  ->  m = 20 / 0.4 = 50 MB
    fit = size_fit(measured((0.0106, 0.0118), (0.013, 0.019), (0.019, 0.037)))
    assert fit["presigned_3x_below_proxied_from_mb"] == pytest.approx(50.0)


def test_no_crossover_when_proxied_grows_no_faster_than_three_presigned() -> None:
    fit = size_fit(measured((0.010, 0.012), (0.013, 0.019), (0.019, 0.037)))  # both 1/3 ms per MB * 3 = 1
    assert fit["presigned_3x_below_proxied_from_mb"] is None


def test_already_below_at_every_size_is_zero() -> None:
    fit = size_fit(measured((0.002, 0.002), (0.013, 0.019), (0.019, 0.037)))
    assert fit["presigned_3x_below_proxied_from_mb"] == 0.0


@pytest.mark.parametrize(
    "change",
    [
        {"large_photo_mb": None},
        {"large_photo_mb": 3.0},  # one size only: no line
        {"large_photo_mb": 2.0},
        {"photo_mb": 0},
    ],
)
def test_no_fit_without_two_sizes(change: dict[str, Any]) -> None:
    results = measured((0.010, 0.010), (0.013, 0.019), (0.019, 0.037))
    results.update(change)
    assert size_fit(results) == {}


def test_no_fit_without_the_large_uploads() -> None:
    results = {
        "photo_mb": 3.0,
        "presigned_api_cpu_s": 0.01,
        "proxied_api_cpu_s": 0.013,
        "base64_api_cpu_s": 0.02,
    }
    assert size_fit(results) == {}
