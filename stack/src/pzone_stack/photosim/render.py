"""Synthetic photos of a parked e-scooter at a known tilt (Pillow + numpy; nothing downloaded).

The scooter is a small 3D model (wheels, deck, stem, handlebar, fender, kickstand) that rolls about the line through
its two tyre contacts, so it always rests on the ground: ``tilt_deg`` is the angle of its vertical axis (the stem)
from vertical, 0 standing, 90 lying on its side. The camera sees it roughly end-on (from behind or in front, turned
by up to ±30°), so a lean to the left or right happens mostly in the image plane, with some foreshortening when the
scooter is turned toward or away from the camera. A phone camera looks down 5–28°, with a small roll (±5°).

Around it: a background (wall, bricks, hedge, sky) above a ground line (asphalt, pavement, grass, gravel) placed
where a wall behind the scooter would meet the ground, a soft shadow, sometimes an occluder in front (a pole, a bag,
a bin, a bush; never more than a third of the scooter), and the camera's lighting, colour cast, blur, noise and
JPEG quality.

Every random choice is made up front by :func:`sample_params` from the caller's ``numpy.random.Generator``;
:func:`draw` is a pure function of the :class:`PhotoParams` (its texture noise comes from ``params.seed``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter

Lean = Literal["left", "right"]
Rgb = tuple[int, int, int]
Points = np.ndarray  # (n, 3) float, metres

BACKGROUNDS = ("wall", "bricks", "hedge", "sky", "fence")
GROUNDS = ("asphalt", "pavement", "grass", "gravel")
OCCLUDERS = ("pole", "bag", "bin", "bush")
SCOOTER_HEIGHT_M = 1.1  # ground to the handlebar's top when standing
_SUPERSAMPLE = 2  # the scooter is drawn at this scale and reduced: smooth edges

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


# --- the model ---------------------------------------------------------------------------------------------------
# Scooter frame: x forward along the deck, y to its left, z up; the contact line is the x axis.
def _circle(cx: float, cz: float, r: float, y: float, n: int = 20) -> Points:
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), np.full(n, y), cz + r * np.sin(a)], axis=1)


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> list[Points]:
    c = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
    faces = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
    return [c[list(f)] for f in faces]


@dataclass(frozen=True, slots=True)
class _Part:
    kind: Literal["poly", "line", "hull"]
    points: Points
    colour: Rgb
    width_m: float = 0.0
    shade: bool = False  # polygons: shaded by their normal


def _scooter(p: PhotoParams) -> list[_Part]:
    tyre: Rgb = (22, 22, 24)
    hub: Rgb = (150, 150, 155)
    grip: Rgb = (15, 15, 15)
    parts: list[_Part] = []
    for cx, r in ((-0.44, 0.10), (0.46, 0.11)):
        both = np.concatenate([_circle(cx, r, r, -0.028), _circle(cx, r, r, 0.028)])
        parts.append(_Part("hull", both, tyre))
        for side in (-0.03, 0.03):
            parts.append(_Part("poly", _circle(cx, r, r * 0.55, side, 12), hub))
    for face in _box(-0.42, 0.36, -0.075, 0.075, 0.075, 0.125):
        parts.append(_Part("poly", face, p.body_colour, shade=True))
    parts.append(
        _Part("line", np.array([[-0.42, 0, 0.12], [-0.52, 0, 0.17], [-0.56, 0, 0.12]]), p.body_colour, 0.05)
    )
    parts.append(_Part("line", np.array([[0.36, 0, 0.12], [0.46, 0, 0.11]]), p.stem_colour, 0.04))  # fork
    parts.append(_Part("line", np.array([[0.38, 0, 0.12], [0.43, 0, 1.02]]), p.stem_colour, 0.05))  # stem
    parts.append(_Part("line", np.array([[0.43, -0.23, 1.04], [0.43, 0.23, 1.04]]), (35, 35, 38), 0.03))
    for s in (-1, 1):
        parts.append(_Part("line", np.array([[0.43, s * 0.24, 1.04], [0.43, s * 0.15, 1.04]]), grip, 0.04))
    if p.kickstand:
        parts.append(_Part("line", np.array([[-0.05, 0.07, 0.08], [-0.16, 0.2, 0.0]]), (45, 45, 48), 0.02))
    return parts


def _pose(p: PhotoParams) -> np.ndarray:
    """Rotation from the scooter frame to the world (X right, Y away from the camera, Z up)."""
    heading = math.radians((270.0 if p.from_front else 90.0) + p.turn_deg)
    # roll about the contact line; its sign makes the stem lean to the asked side of the image
    sign = (1.0 if p.lean == "right" else -1.0) * (1.0 if math.sin(heading) > 0 else -1.0)
    r = math.radians(p.tilt_deg) * sign
    roll = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ch, sh = math.cos(heading), math.sin(heading)
    yaw = np.array([[ch, -sh, 0], [sh, ch, 0], [0, 0, 1]])
    return yaw @ roll


def _project(p: PhotoParams, world: Points) -> tuple[np.ndarray, np.ndarray]:
    """World points → (image points before the camera roll, in metres at the contact's depth; depth)."""
    e = math.radians(p.elevation_deg)
    x, y, z = world[:, 0], world[:, 1], world[:, 2]
    up = z * math.cos(e) + y * math.sin(e)
    depth = y * math.cos(e) - z * math.sin(e)
    f = p.distance_m / np.maximum(p.distance_m + depth, 0.3)
    return np.stack([x * f, up * f], axis=1), depth


def _to_px(
    p: PhotoParams, uv: np.ndarray, scale: float = 1.0, offset: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """Metres in the image plane → pixels, with the camera roll about the image centre."""
    w, h = p.size
    px = p.origin_px[0] + uv[:, 0] * p.scale_px_per_m
    py = p.origin_px[1] - uv[:, 1] * p.scale_px_per_m
    a = math.radians(p.camera_roll_deg)
    cx, cy = w / 2, h / 2
    rx = cx + (px - cx) * math.cos(a) - (py - cy) * math.sin(a)
    ry = cy + (px - cx) * math.sin(a) + (py - cy) * math.cos(a)
    return np.stack([(rx - offset[0]) * scale, (ry - offset[1]) * scale], axis=1)


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of 2D points."""
    order = sorted(map(tuple, pts.tolist()))

    def cross(o: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, ...]] = []
    upper: list[tuple[float, ...]] = []
    for q in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    for q in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    return np.array(lower[:-1] + upper[:-1])


def _shade(colour: Rgb, factor: float) -> Rgb:
    return (
        min(255, int(colour[0] * factor)),
        min(255, int(colour[1] * factor)),
        min(255, int(colour[2] * factor)),
    )


def _flat(pts: np.ndarray) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in pts]


def _object_layer(p: PhotoParams) -> tuple[Image.Image, tuple[int, int]]:
    """The scooter alone (RGBA, its alpha the object mask) and where its top-left corner goes in the frame."""
    rot = _pose(p)
    parts = _scooter(p)
    e = math.radians(p.elevation_deg)
    view = np.array([0.0, math.cos(e), -math.sin(e)])  # from the camera into the scene
    light = np.array([-0.4, -0.5, 0.77])
    projected = []
    for part in parts:
        world = part.points @ rot.T
        uv, depth = _project(p, world)
        projected.append((float(depth.mean()), part, world, uv))
    all_px = _to_px(p, np.concatenate([uv for *_, uv in projected]))
    pad = 0.06 * p.scale_px_per_m + 4
    x0, y0 = np.floor(all_px.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(all_px.max(axis=0) + pad).astype(int)
    k = _SUPERSAMPLE
    layer = Image.new("RGBA", (int(x1 - x0) * k, int(y1 - y0) * k), (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    for _depth, part, world, uv in sorted(projected, key=lambda item: -item[0]):
        px = _to_px(p, uv, k, (float(x0), float(y0)))
        if part.kind == "line":
            width = max(1, round(part.width_m * p.scale_px_per_m * k))
            pen.line(_flat(px), fill=(*part.colour, 255), width=width, joint="curve")
            r = width / 2
            for cx, cy in (px[0], px[-1]):  # round caps
                pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*part.colour, 255))
            continue
        colour = part.colour
        if part.shade:
            normal = np.cross(world[1] - world[0], world[2] - world[0])
            norm = float(np.linalg.norm(normal))
            if norm == 0:
                continue
            normal /= norm
            if float(normal @ view) >= 0:  # faces away from the camera
                continue
            colour = _shade(colour, 0.55 + 0.6 * max(0.0, float(normal @ light)))
        shape = _hull(px) if part.kind == "hull" else px
        pen.polygon(_flat(shape), fill=(*colour, 255))
    layer = layer.reduce(k)
    return layer, (int(x0), int(y0))


def _shadow_mask(p: PhotoParams, shrink: int = 4) -> Image.Image:
    """A soft shadow on the ground: the scooter's parts flattened along the sun's direction."""
    w, h = p.size
    rot = _pose(p)
    mask = Image.new("L", (w // shrink + 1, h // shrink + 1), 0)
    pen = ImageDraw.Draw(mask)
    for part in _scooter(p):
        world = part.points @ rot.T
        flat = world.copy()
        flat[:, 0] += world[:, 2] * p.sun[0]
        flat[:, 1] += world[:, 2] * p.sun[1]
        flat[:, 2] = 0.0
        px = _to_px(p, _project(p, flat)[0], 1.0 / shrink)
        if part.kind == "line":
            pen.line(_flat(px), fill=255, width=max(1, int(part.width_m * p.scale_px_per_m / shrink)))
        else:
            pen.polygon(_flat(_hull(px)), fill=255)
    return mask.filter(ImageFilter.BoxBlur(max(1.0, p.scale_px_per_m * 0.03 / shrink)))


# --- the scene -----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _grid(w: int, h: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (full-resolution units) of a ``w`` x ``h`` grid sampled every ``step`` pixels."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) * np.float32(step)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return xs, ys


@lru_cache(maxsize=4)
def _grain(w: int, h: int) -> np.ndarray:
    """A fixed bank of unit Gaussian noise twice the frame's size; photos take random windows of it."""
    bank = np.random.default_rng(20240611).standard_normal((2 * h, 2 * w), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _noise(rng: np.random.Generator, w: int, h: int, cell: tuple[float, float]) -> np.ndarray:
    """Smooth noise in 0..1 (h, w): random values on a coarse grid (``cell`` pixels), bilinearly upsampled."""
    small = rng.integers(0, 256, (int(h / cell[1]) + 2, int(w / cell[0]) + 2), dtype=np.uint8)
    return (
        np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    )


def _texture(kind: str, colour: Rgb, rng: np.random.Generator, w: int, h: int, y0: int = 0) -> Image.Image:
    """Rows ``y0``..``y0 + h`` of a background or ground texture, computed at half resolution and upscaled."""
    hw, hh = (w + 1) // 2, (h + 1) // 2
    xs, ys = _grid(hw, hh, 2.0)
    ys = ys + np.float32(y0)
    base = np.array(colour, dtype=np.float32)
    low = _noise(rng, hw, hh, (hw / 4 + 1, hh / 4 + 1)) - 0.5
    img: np.ndarray
    if kind == "sky":
        top = np.array((90, 140, 210), np.float32) * rng.uniform(0.85, 1.1)
        t = (ys / h)[..., None]
        img = top * (1 - t) + np.array((215, 225, 235), np.float32) * t
        clouds = np.clip(_noise(rng, hw, hh, (hw / 6 + 1, hh / 8 + 1)) * 2.2 - 1.1, 0, 1)[..., None]
        img = img * (1 - clouds) + 245.0 * clouds
    elif kind == "hedge":
        mid = _noise(rng, hw, hh, (3, 3)) - 0.5
        leaf = np.array((45, 90, 40), np.float32) * rng.uniform(0.8, 1.2)
        img = leaf + (mid * 70 + low * 40)[..., None]
    elif kind == "grass":
        mid = _noise(rng, hw, hh, (1, 4)) - 0.5
        img = base + (mid * 60 + low * 35)[..., None] * np.array((0.8, 1.0, 0.6), np.float32)
    elif kind == "gravel":
        mid = _noise(rng, hw, hh, (1.5, 1)) - 0.5
        img = base + (mid * 55 + low * 25)[..., None]
    elif kind == "fence":
        period = rng.uniform(18, 45)
        planks = ((xs % period) < 3)[..., None]
        img = base + (low * 30 + (_noise(rng, hw, hh, (20, 1.5)) - 0.5) * 25)[..., None]
        img = np.where(planks, img * 0.55, img)
    else:
        img = base + (low * 28)[..., None]
        if kind == "bricks":
            bh = rng.uniform(10, 22)
            bw = bh * rng.uniform(2.2, 3.2)
            shift = (np.floor(ys / bh) % 2) * bw / 2
            mortar = ((ys % bh) < 2.5) | (((xs + shift) % bw) < 2.5)
            per_brick = _noise(rng, hw, hh, (max(1.0, bw / 2), max(1.0, bh / 2))) - 0.5
            img = np.where(mortar[..., None], np.float32(200.0), img + (per_brick * 30)[..., None])
        elif kind == "pavement":
            tile = rng.uniform(25, 60)
            lines = ((ys % tile) < 2.5) | (((xs + rng.uniform(0, tile)) % (tile * 1.5)) < 2.5)
            img = np.where(lines[..., None], img * 0.7, img)
        elif kind == "asphalt":
            img = img + (_noise(rng, hw, hh, (1, 1)) - 0.5)[..., None] * 30
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return small.resize((w, h), Image.Resampling.BILINEAR)


def _occluder(
    p: PhotoParams, obj_box: tuple[int, int, int, int], contact: np.ndarray
) -> tuple[Image.Image, Image.Image]:
    """Something in front of the scooter: (its look, its mask), both of the frame's size."""
    x0, _y0, x1, _y1 = obj_box
    s = p.scale_px_per_m
    cx = x0 + p.occluder_x * (x1 - x0)
    ground_y = float(contact[1]) + 0.05 * s
    col = p.occluder_colour
    mask = Image.new("L", p.size, 0)
    pen = ImageDraw.Draw(mask)
    layer = Image.new("RGB", p.size, col)
    lpen = ImageDraw.Draw(layer)
    if p.occluder == "pole":
        half = (0.04 + 0.05 * p.occluder_size) * s
        pen.rectangle((cx - half, -10, cx + half, ground_y + 0.1 * s), fill=255)
        lpen.rectangle((cx - half * 0.4, -10, cx - half * 0.1, ground_y + 0.1 * s), fill=_shade(col, 1.5))
    elif p.occluder == "bag":
        bw, bh = (0.25 + 0.2 * p.occluder_size) * s, (0.2 + 0.15 * p.occluder_size) * s
        pen.rounded_rectangle((cx - bw / 2, ground_y - bh, cx + bw / 2, ground_y), radius=bw * 0.15, fill=255)
        handle = max(2, int(0.015 * s))
        pen.arc(
            (cx - bw / 4, ground_y - bh * 1.5, cx + bw / 4, ground_y - bh * 0.6),
            180,
            360,
            fill=255,
            width=handle,
        )
        lpen.rectangle(
            (cx - bw / 2, ground_y - bh * 0.55, cx + bw / 2, ground_y - bh * 0.5), fill=_shade(col, 0.6)
        )
    elif p.occluder == "bin":
        bw, bh = (0.3 + 0.2 * p.occluder_size) * s, (0.45 + 0.35 * p.occluder_size) * s
        corners = [
            (cx - bw / 2, ground_y - bh),
            (cx + bw / 2, ground_y - bh),
            (cx + bw * 0.42, ground_y),
            (cx - bw * 0.42, ground_y),
        ]
        pen.polygon(corners, fill=255)
        lpen.rectangle((cx - bw / 2, ground_y - bh, cx + bw / 2, ground_y - bh * 0.9), fill=_shade(col, 0.7))
    else:  # bush
        r = (0.15 + 0.15 * p.occluder_size) * s
        rng = np.random.default_rng(p.seed + 7)
        for _ in range(7):
            bx, by = cx + rng.uniform(-1.6, 1.6) * r, ground_y - rng.uniform(0.2, 1.0) * r
            rr = r * rng.uniform(0.5, 0.9)
            pen.ellipse((bx - rr, by - rr, bx + rr, by + rr), fill=255)
        w, h = p.size
        leaves = (_noise(rng, w, h, (4, 4)) * 110 - 55)[..., None] + np.array((50, 95, 40), np.float32)
        layer = Image.fromarray(np.clip(leaves, 0, 255).astype(np.uint8))
    return layer, mask


def _lut(brightness: float, contrast: float, cast: tuple[float, float, float]) -> list[int]:
    v = np.arange(256, dtype=np.float32)
    out = [np.clip(((v - 128.0) * contrast + 128.0) * brightness * c, 0, 255) for c in cast]
    return np.concatenate(out).astype(np.uint8).tolist()


def draw(p: PhotoParams) -> Image.Image:
    """The photo (RGB) for these parameters."""
    w, h = p.size
    rng = np.random.default_rng(p.seed)
    # the ground line: where a wall ``wall_distance_m`` behind the contact meets the ground
    contact = _to_px(p, np.zeros((1, 2)))[0]
    line = _to_px(p, _project(p, np.array([[0.0, p.wall_distance_m, 0.0]]))[0])[0]
    a = math.radians(p.camera_roll_deg)
    dx, dy = math.cos(a), math.sin(a)  # along the line
    far = 4.0 * (w + h)
    below = [
        (line[0] - far * dx, line[1] - far * dy),
        (line[0] + far * dx, line[1] + far * dy),
        (line[0] + far * dx - far * dy, line[1] + far * dy + far * dx),
        (line[0] - far * dx - far * dy, line[1] - far * dy + far * dx),
    ]
    ground_mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(ground_mask).polygon(below, fill=255)
    # each texture only where it shows: the sky/wall down to the line's lowest row, the ground from its highest
    ends = [line[1] + t * dy for t in (-line[0] / dx, (w - line[0]) / dx)] if abs(dx) > 1e-6 else [line[1]]
    top_row = int(min(h, max(0, math.floor(min(ends)))))
    bottom_row = int(min(h, max(0, math.ceil(max(ends)) + 1)))
    frame = Image.new("RGB", (w, h))
    if bottom_row > 0:
        frame.paste(_texture(p.background, p.wall_colour, rng, w, bottom_row), (0, 0))
    if top_row < h:
        ground = _texture(p.ground, p.ground_colour, rng, w, h - top_row, top_row)
        frame.paste(ground, (0, top_row), ground_mask.crop((0, top_row, w, h)))
    shrink = 4
    shadow = _shadow_mask(p, shrink)
    box = shadow.getbbox()
    if box is not None:
        x0, y0, x1, y1 = box
        big = shadow.resize(((x1 - x0) * shrink, (y1 - y0) * shrink), Image.Resampling.BILINEAR, box=box)
        strength = [int(v * p.shadow_strength) for v in range(256)]
        frame.paste(
            (0, 0, 0),
            (x0 * shrink, y0 * shrink, x0 * shrink + big.width, y0 * shrink + big.height),
            big.point(strength),
        )
    layer, at = _object_layer(p)
    frame.paste(layer, at, layer)
    if p.occluder is not None:
        box = (at[0], at[1], at[0] + layer.width, at[1] + layer.height)
        look, mask = _occluder(p, box, contact)
        alpha = np.asarray(layer.getchannel("A")) > 127
        window = np.asarray(mask.crop(box)) > 127
        if not alpha.any() or (window & alpha).sum() <= alpha.sum() / 3:  # never hide more than a third
            frame.paste(look, (0, 0), mask)
    if p.blur_radius > 0:  # out of focus or shaken: a softening resample
        f = 1.0 + p.blur_radius
        frame = frame.resize((max(8, int(w / f)), max(8, int(h / f))), Image.Resampling.BOX).resize(
            (w, h), Image.Resampling.BILINEAR
        )
    # the camera: exposure, contrast, white balance, uneven light (a gradient), sensor noise
    gx, gy = p.light_gradient
    amp = (abs(gx) + abs(gy)) / 2
    if amp > 0.01:
        sx, sy = _grid(w // 16 + 1, h // 16 + 1, 16.0)
        g = (gx * (sx / w - 0.5) + gy * (sy / h - 0.5) + amp) / (2 * amp)
        ramp = Image.fromarray(np.clip(g * 255, 0, 255).astype(np.uint8)).resize(
            (w, h), Image.Resampling.BILINEAR
        )
        dark = frame.point(_lut(p.brightness * (1 - amp), p.contrast, p.colour_cast))
        frame = frame.point(_lut(p.brightness * (1 + amp), p.contrast, p.colour_cast))
        frame.paste(dark, (0, 0), ramp.point(lambda v: 255 - v))
    else:
        frame = frame.point(_lut(p.brightness, p.contrast, p.colour_cast))
    if p.noise_sigma > 0:
        ox, oy = int(rng.integers(w)), int(rng.integers(h))
        grain = _grain(w, h)[oy : oy + h, ox : ox + w] * np.float32(p.noise_sigma) + np.float32(128.0)
        noise = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).convert("RGB")
        frame = ImageChops.add(frame, noise, 1.0, -128)
    return frame


def object_mask(p: PhotoParams) -> Image.Image:
    """Where the scooter is in the photo (mode ``L``, 255 = scooter, before any occluder)."""
    w, h = p.size
    layer, at = _object_layer(p)
    mask = Image.new("L", (w, h), 0)
    mask.paste(layer.getchannel("A"), at)
    return mask


# --- sampling and encoding -----------------------------------------------------------------------------------------
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
    rot = _pose(draft)
    pts = np.concatenate([_project(draft, part.points @ rot.T)[0] for part in _scooter(draft)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    margin = 0.07 * min(w, h)
    scale = float(min(scale, (w - 2 * margin) / (hi[0] - lo[0]), (h - 2 * margin) / (hi[1] - lo[1])))
    # place the contact point so that the whole scooter is in the frame (x0..x1, y0..y1 in pixels)
    x_lo, x_hi = margin - lo[0] * scale, w - margin - hi[0] * scale
    y_lo, y_hi = margin + hi[1] * scale, h - margin + lo[1] * scale
    origin = (float(rng.uniform(x_lo, max(x_lo, x_hi))), float(rng.uniform(y_lo, max(y_lo, y_hi))))
    return replace(draft, scale_px_per_m=scale, origin_px=origin)


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
