"""Waiting for the model tier to serve a promoted model: which version answers, and on how many workers."""

from __future__ import annotations

import time
from collections.abc import Callable

from pzone.tier_contract import (
    answer_results,
    classify_url,
    image_files,
    item_version,
    metrics_url,
    serving_counts,
)


def probe_image() -> bytes:
    """A tiny JPEG for asking the model tier which model answers."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


def served_version(tier_url: str, timeout_s: float = 5.0) -> str | None:
    """The model version the tier answers /classify with (it has no version route); None when it is not up."""
    import httpx

    try:
        response = httpx.post(classify_url(tier_url), files=image_files([probe_image()]), timeout=timeout_s)
        response.raise_for_status()
        return item_version(answer_results(response.json(), 1)[0])
    except (httpx.HTTPError, ValueError):  # down, or not an answer (bad JSON included)
        return None


def serving_workers(tier_url: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """How many of the tier's worker processes answer with each model version (its serving gauge, summed over live
    workers by BentoML's multiprocess metrics); None when the tier is not up or has no such gauge.

    One /classify probe reaches one worker; with several workers, only this says whether all of them swapped."""
    import httpx

    try:
        response = httpx.get(metrics_url(tier_url), timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return serving_counts(response.text) or None


def _rolled_out(counts: dict[str, float], version: str) -> str | None:
    """``version`` when every live worker answers with it, else a version some worker still answers with."""
    others = [v for v, n in sorted(counts.items(), key=lambda item: -item[1]) if n > 0 and v != version]
    if counts.get(version, 0) > 0 and not others:
        return version
    return others[0] if others else None


def wait_for_version(
    tier_url: str,
    version: str,
    timeout_s: float,
    *,
    interval_s: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> str | None:
    """Poll the tier until every worker answers with ``version`` (their watchers swap the model in); returns the
    version it served last (``version`` on success). A tier without the serving gauge is asked with a /classify
    probe."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while True:
        counts = serving_workers(tier_url)
        seen = _rolled_out(counts, version) if counts is not None else served_version(tier_url)
        if seen == version or time.monotonic() >= deadline or should_stop():
            return seen
        time.sleep(interval_s)
