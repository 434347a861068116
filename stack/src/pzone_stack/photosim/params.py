"""Everything a photo depends on (:class:`PhotoParams`), and :func:`sample_params`, which makes every random choice
of a photo up front from the caller's ``numpy.random.Generator``, so that :func:`~pzone_stack.photosim.scene.draw`
can be a pure function of the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from pzone_stack.photosim.scooter import pose, project, scooter_parts

Lean = Literal["left", "right"]
Rgb = tuple[int, int, int]

BACKGROUNDS = ("wall", "bricks", "hedge", "sky", "fence")
GROUNDS = ("asphalt", "pavement", "grass", "gravel")
OCCLUDERS = ("pole", "bag", "bin", "bush")
SCOOTER_HEIGHT_M = 1.1  # ground to the handlebar's top when standing

_BODY_COLOURS: tuple[Rgb, ...] = (
    (30, 30, 32),
    (70, 72, 76),
    (225, 226, 222),
    (40, 170, 70),  # green
    (235, 110, 20),  # orange
    (200, 40, 40),  # red
    (20, 150, 160),  # teal
    (40, 80, 180),  # blue
    (240, 200, 30),  # yellow
)
_WALL_COLOURS: tuple[Rgb, ...] = (
    (205, 195, 175),
    (180, 180, 178),
    (230, 228, 220),
    (170, 120, 95),
    (215, 190, 120),
    (140, 150, 160),
)
_GROUND_COLOURS: dict[str, tuple[Rgb, ...]] = {
    "asphalt": ((70, 70, 72), (95, 93, 90), (55, 57, 60)),
    "pavement": ((170, 168, 160), (150, 140, 130), (190, 185, 175)),
    "grass": ((70, 120, 45), (95, 135, 55), (60, 100, 40)),
    "gravel": ((160, 145, 120), (140, 130, 115), (175, 160, 135)),
}


@dataclass(frozen=True, slots=True)
class PhotoParams:
    """Everything a photo depends on; :func:`draw` is a pure function of it."""

    size: tuple[int, int]
    tilt_deg: float
    lean: Lean
    turn_deg: float  # heading away from end-on: >0 turns the lean out of the image plane (foreshortening)
    from_front: bool  # seen from in front (else from behind)
    elevation_deg: float  # camera looking down
    camera_roll_deg: float
    distance_m: float  # camera distance, for the (mild) perspective
    scale_px_per_m: float
    origin_px: tuple[float, float]  # where the contact point lands, before the camera roll
    wall_distance_m: float  # where the background meets the ground, behind the scooter
    background: str
    ground: str
    wall_colour: Rgb
    ground_colour: Rgb
    body_colour: Rgb
    stem_colour: Rgb
    kickstand: bool
    sun: tuple[float, float]  # shadow direction on the ground (metres of shift per metre of height)
    shadow_strength: float
    occluder: str | None
    occluder_x: float  # 0..1 across the scooter's width
    occluder_size: float  # 0..1
    occluder_colour: Rgb
    brightness: float
    contrast: float
    colour_cast: tuple[float, float, float]
    light_gradient: tuple[float, float]  # gain change across x and y
    blur_radius: float
    noise_sigma: float
    quality: int
    seed: int


def _colour(rng: np.random.Generator, choices: tuple[Rgb, ...], jitter: float = 0.12) -> Rgb:
    c = choices[int(rng.integers(len(choices)))]
    f = rng.uniform(1 - jitter, 1 + jitter, 3)
    r, g, b = (int(min(255, max(0, v * k))) for v, k in zip(c, f, strict=True))
    return (r, g, b)


def sample_params(
    tilt_deg: float,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (640, 480),
    lean: Lean | None = None,
    quality: int | None = None,
) -> PhotoParams:
    """Draw every random choice of a photo of the scooter at ``tilt_deg`` (0..90) from ``rng``."""
    if not 0.0 <= tilt_deg <= 180.0 or not math.isfinite(tilt_deg):
        raise ValueError(f"tilt_deg must be within 0..180, got {tilt_deg!r}")
    w, h = size
    if w < 32 or h < 32:
        raise ValueError("size must be at least 32x32")
    tilt = min(tilt_deg, 95.0)  # lying on its side is as far as a scooter goes
    side: Lean = lean if lean is not None else ("left" if rng.random() < 0.5 else "right")
    if side not in ("left", "right"):
        raise ValueError(f"lean must be 'left' or 'right', got {lean!r}")
    turn = float(rng.triangular(-30.0, 0.0, 30.0))
    background = str(rng.choice(BACKGROUNDS))
    ground = str(rng.choice(GROUNDS))
    body = _colour(rng, _BODY_COLOURS)
    draft = PhotoParams(
        size=size,
        tilt_deg=tilt,
        lean=side,
        turn_deg=turn,
        from_front=bool(rng.random() < 0.5),
        elevation_deg=float(rng.uniform(5.0, 28.0)),
        camera_roll_deg=float(rng.uniform(-5.0, 5.0)),
        distance_m=float(rng.uniform(2.5, 6.0)),
        scale_px_per_m=1.0,
        origin_px=(0.0, 0.0),
        wall_distance_m=float(rng.uniform(0.3, 6.0)),
        background=background,
        ground=ground,
        wall_colour=_colour(rng, _WALL_COLOURS),
        ground_colour=_colour(rng, _GROUND_COLOURS[ground]),
        body_colour=body,
        stem_colour=body if rng.random() < 0.6 else _colour(rng, ((60, 60, 64), (160, 160, 165))),
        kickstand=bool(rng.random() < 0.7),
        sun=(float(rng.uniform(-0.8, 0.8)), float(rng.uniform(-0.2, 0.6))),
        shadow_strength=float(rng.uniform(0.15, 0.5)),
        occluder=str(rng.choice(OCCLUDERS)) if rng.random() < 0.3 else None,
        occluder_x=float(rng.uniform(0.0, 1.0)),
        occluder_size=float(rng.uniform(0.0, 1.0)),
        occluder_colour=_colour(
            rng, ((90, 90, 95), (40, 60, 40), (120, 70, 40), (30, 30, 30), (170, 40, 40)), 0.2
        ),
        brightness=float(rng.uniform(0.65, 1.3)),
        contrast=float(rng.uniform(0.7, 1.2)),
        colour_cast=(float(rng.uniform(0.9, 1.1)), 1.0, float(rng.uniform(0.88, 1.12))),
        light_gradient=(float(rng.uniform(-0.35, 0.35)), float(rng.uniform(-0.3, 0.3))),
        blur_radius=float(rng.uniform(0.4, 1.6)) * (w / 640) if rng.random() < 0.35 else 0.0,
        noise_sigma=float(rng.uniform(0.0, 9.0)),
        quality=int(quality) if quality is not None else int(rng.integers(45, 96)),
        seed=int(rng.integers(2**31)),
    )
    # size: the standing scooter spans 40–80% of the frame's height, and whatever it is must fit the frame
    scale = float(rng.uniform(0.4, 0.8)) * h / SCOOTER_HEIGHT_M
    rot = pose(draft)
    pts = np.concatenate([project(draft, part.points @ rot.T)[0] for part in scooter_parts(draft)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = 0.07 * min(w, h)
    scale = float(min(scale, (w - 2 * margin) / (hi[0] - lo[0]), (h - 2 * margin) / (hi[1] - lo[1])))
    # place the contact point so that the whole scooter is in the frame (x0..x1, y0..y1 in pixels)
    x_lo, x_hi = margin - lo[0] * scale, w - margin - hi[0] * scale
    y_lo, y_hi = margin + hi[1] * scale, h - margin + lo[1] * scale
    origin = (float(rng.uniform(x_lo, max(x_lo, x_hi))), float(rng.uniform(y_lo, max(y_lo, y_hi))))
    return replace(draft, scale_px_per_m=scale, origin_px=origin)
