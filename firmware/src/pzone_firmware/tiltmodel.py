"""A seeded model of how a parked e-scooter's tilt evolves, sample by sample (CPython, for the simulation).

Mostly upright on its kickstand (a few degrees, swaying slightly), sometimes knocked over (80-90°) or left
leaning against something (25-50°), and later set upright again. The model advances one sample per call and
ignores wall time, so the same seed gives the same tilt sequence however fast or slow the host runs.
"""

from __future__ import annotations

import math
import random

UPRIGHT = "upright"
LEANING = "leaning"
FALLEN = "fallen"


class TiltModel:
    def __init__(
        self,
        rng: random.Random,
        dt_s: float,
        *,
        fall_rate_per_h: float = 20.0,
        lean_rate_per_h: float = 20.0,
        mean_fallen_s: float = 30.0,
        mean_leaning_s: float = 20.0,
    ) -> None:
        if dt_s <= 0:
            raise ValueError("dt_s must be positive")
        self.rng = rng
        self.dt_s = dt_s
        self.mean_fallen_s = mean_fallen_s
        self.mean_leaning_s = mean_leaning_s
        # per-sample transition probabilities of a Poisson process with the given hourly rates
        self.p_fall = 1.0 - math.exp(-fall_rate_per_h / 3600.0 * dt_s)
        self.p_lean = 1.0 - math.exp(-lean_rate_per_h / 3600.0 * dt_s)
        self.state = UPRIGHT
        self.rest_tilt = rng.uniform(1.0, 5.0)  # kickstand lean differs per scooter
        self.rest_azimuth = rng.uniform(0.0, 360.0)
        self.target = self.rest_tilt
        self.azimuth = self.rest_azimuth
        self.tilt = self.rest_tilt
        self.remaining_s = 0.0
        self.sway = 0.0
        self.events = 0
        self.last = (self.tilt, self.azimuth)  # the latest sample, for observers (see current())

    def _enter(self, state: str) -> None:
        rng = self.rng
        self.state = state
        if state == FALLEN:
            self.target = rng.uniform(80.0, 90.0)
            self.azimuth = rng.uniform(0.0, 360.0)
            self.remaining_s = rng.expovariate(1.0 / self.mean_fallen_s)
            self.events += 1
        elif state == LEANING:
            self.target = rng.uniform(25.0, 50.0)
            self.azimuth = rng.uniform(0.0, 360.0)
            self.remaining_s = rng.expovariate(1.0 / self.mean_leaning_s)
            self.events += 1
        else:
            self.rest_tilt = rng.uniform(1.0, 5.0)  # put back on the stand, never quite the same way
            self.target = self.rest_tilt
            self.azimuth = self.rest_azimuth

    def next(self) -> tuple[float, float]:
        """Advance one sample; returns (tilt from vertical in degrees, azimuth of the lean in degrees)."""
        rng = self.rng
        if self.state == UPRIGHT:
            u = rng.random()
            if u < self.p_fall:
                self._enter(FALLEN)
            elif u < self.p_fall + self.p_lean:
                self._enter(LEANING)
        else:
            self.remaining_s -= self.dt_s
            if self.remaining_s <= 0:
                self._enter(UPRIGHT)
        # first-order motion towards the target: a fall takes a fraction of a second, lifting one longer
        tau = 0.2 if self.state == FALLEN else 0.8
        self.tilt += (self.target - self.tilt) * (1.0 - math.exp(-self.dt_s / tau))
        # wind and passers-by: a small mean-reverting sway, larger while leaning on something wobbly
        sigma = 0.6 if self.state == LEANING else 0.25
        self.sway = 0.9 * self.sway + rng.gauss(0.0, sigma)
        self.last = (max(0.0, min(180.0, self.tilt + self.sway)), self.azimuth)
        return self.last

    def current(self) -> tuple[float, float]:
        """The latest sample (tilt, azimuth) without advancing the model: the object's true pose right now.
        Safe to call from another thread (one tuple, replaced whole)."""
        return self.last

    def angle(self, t: float = 0.0) -> tuple[float, float]:
        """The ``angle_fn`` for :class:`~pzone_firmware.hal_cpython.SimulatedSensor` (t is ignored on purpose)."""
        return self.next()
