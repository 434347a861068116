"""Virtual photographers of a running fleet: pick a device, photograph it at its true tilt, upload it through the API.

`pzone demo` and `pzone simulate photos` take their photos with :func:`photograph_round`; they differ only in how
they pick a device (:func:`pick_by_class` or :func:`pick_any`). The true class is for reports only: no label is
ever sent with a photo, the platform labels it from the device's own readings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pzone.tilt import FALLEN_MIN_DEG, UPRIGHT_MAX_DEG, classify_tilt
from pzone_stack.photosim.client import ApiClient, ApiError, DeviceState, photograph

log = logging.getLogger("pzone.photographer")

SETTLED_DEG = 2.0  # a device within this of its pose's target angle is at rest

# Chooses the device to photograph next among the fleet's tilt models (by device id).
Pick = Callable[[Mapping[str, Any], np.random.Generator], str]


@dataclass(frozen=True)
class Thresholds:
    upright_max_deg: float = UPRIGHT_MAX_DEG
    fallen_min_deg: float = FALLEN_MIN_DEG

    def classify(self, tilt_deg: float) -> str:
        return classify_tilt(tilt_deg, self.upright_max_deg, self.fallen_min_deg).value


@dataclass(frozen=True)
class Shot:
    """One photo taken: of which device, its true class at that moment, whether the upload went through."""

    device_id: str
    true_class: str
    uploaded: bool


def at_rest(model: Any) -> bool:
    """Whether the object has settled in its pose (a person photographs a scooter that lies, not one falling)."""
    return abs(float(getattr(model, "tilt", 0.0)) - float(getattr(model, "target", 0.0))) < SETTLED_DEG


def fleet_classes(models: Mapping[str, Any], thresholds: Thresholds) -> dict[str, list[str]]:
    """Devices at rest, by their true class now."""
    by_class: dict[str, list[str]] = {}
    for device_id in sorted(models):
        if at_rest(models[device_id]):
            by_class.setdefault(thresholds.classify(models[device_id].current()[0]), []).append(device_id)
    return by_class


def pick_any(models: Mapping[str, Any], rng: np.random.Generator) -> str:
    """Any device, uniformly."""
    ids = sorted(models)
    return ids[int(rng.integers(len(ids)))]


class PoseClock:
    """Since when each device has held its pose (at rest, in one class), as seen each time it looks: a person
    photographs a scooter that has been lying there a while, and the sensor's label window around such a photo
    sees one pose."""

    def __init__(
        self, models: Mapping[str, Any], thresholds: Thresholds, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.models = models
        self.thresholds = thresholds
        self.clock = clock
        self._since: dict[str, tuple[str, float]] = {}  # device → (class, since when)

    def look(self) -> None:
        now = self.clock()
        resting = {
            device: name
            for name, devices in fleet_classes(self.models, self.thresholds).items()
            for device in devices
        }
        for device in list(self.models):
            name = resting.get(device)
            if name is None:
                self._since.pop(device, None)
            elif device not in self._since or self._since[device][0] != name:
                self._since[device] = (name, now)

    def held(self, hold_s: float) -> dict[str, list[str]]:
        """Devices that have held their pose for at least ``hold_s``, by class (it looks first)."""
        self.look()
        now = self.clock()
        by_class: dict[str, list[str]] = {}
        for device in sorted(self._since):
            name, since = self._since[device]
            if now - since >= hold_s:
                by_class.setdefault(name, []).append(device)
        return by_class


def pick_by_class(thresholds: Thresholds, *, poses: PoseClock | None = None, hold_s: float = 0.0) -> Pick:
    """First a class, uniformly among those present in the fleet right now, then a device at rest in it; any
    device when everything moves. People photograph fallen and leaning scooters more than their share (they report
    them), and it keeps every class common in the training data whatever the fleet's proportions. With ``poses``,
    the devices that have held their pose for ``hold_s`` come first."""

    def pick(models: Mapping[str, Any], rng: np.random.Generator) -> str:
        by_class = (poses.held(hold_s) if poses is not None else {}) or fleet_classes(models, thresholds)
        if not by_class:
            return pick_any(models, rng)
        classes = sorted(by_class)
        members = by_class[classes[int(rng.integers(len(classes)))]]
        return members[int(rng.integers(len(members)))]

    return pick


def wait_for_fleet(
    client: ApiClient,
    models: Mapping[str, Any],
    stop: threading.Event,
    present: Callable[[], Iterable[str]],
    *,
    known_s: float = 60.0,
    every_class_s: float = 60.0,
) -> bool:
    """Wait until the API knows every device of the fleet (RuntimeError after ``known_s``: ingest is not working),
    then until ``present()`` names every class (the fleet starts upright); False when ``every_class_s`` passed
    first."""
    from pzone.tilt import TILT_CLASSES
    from pzone_stack.local_stack import wait_until

    known = lambda: {d["id"] for d in client.devices()}.issuperset(models)  # noqa: E731
    if not wait_until(known, known_s, stop):
        raise RuntimeError("the fleet's devices did not reach the API (ingest)")
    return wait_until(lambda: set(present()) == set(TILT_CLASSES), every_class_s, stop)


def photograph_round(
    client: ApiClient,
    models: Mapping[str, Any],
    zone: str,
    count: int,
    *,
    rng: np.random.Generator,
    interval_s: float,
    size: tuple[int, int],
    stop: threading.Event,
    pick: Pick = pick_any,
    thresholds: Thresholds = Thresholds(),
    on_shot: Callable[[Shot], None] = lambda _shot: None,
) -> tuple[int, int]:
    """``count`` photos, one every ``interval_s``, each of a device at its true tilt, uploaded through the API;
    returns (uploaded, failed). Stops early when ``stop`` is set."""
    import httpx

    uploaded = failed = 0
    next_at = time.monotonic()
    for _ in range(count):
        if stop.wait(max(0.0, next_at - time.monotonic())):
            break
        next_at = time.monotonic() + interval_s
        device_id = pick(models, rng)
        tilt, azimuth = models[device_id].current()
        state = DeviceState(device_id, zone, tilt, azimuth, datetime.now(UTC))
        try:
            client.upload(photograph(state, rng, size=size), device_id=device_id, taken_at=state.at)
        except (httpx.HTTPError, ApiError) as exc:
            failed += 1
            log.warning("upload failed: %s", exc)
            on_shot(Shot(device_id, thresholds.classify(tilt), uploaded=False))
        else:
            uploaded += 1
            on_shot(Shot(device_id, thresholds.classify(tilt), uploaded=True))
    return uploaded, failed
