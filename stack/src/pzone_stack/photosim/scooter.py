"""The scooter as a small 3D model: its parts, its pose at a tilt, the camera's projection, and the two things the
scene takes from it: the scooter's own layer (its alpha the object mask) and its shadow on the ground.

The scooter rolls about the line through its two tyre contacts, so it always rests on the ground: ``tilt_deg`` is the
angle of its vertical axis (the stem) from vertical, 0 standing, 90 lying on its side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:  # params imports this module (to frame the scooter): types only, no import cycle
    from pzone_stack.photosim.params import PhotoParams, Rgb

Points = np.ndarray  # (n, 3) float, metres
_SUPERSAMPLE = 2  # the scooter is drawn at this scale and reduced: smooth edges


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


def scooter_parts(p: PhotoParams) -> list[_Part]:
    """The parts in the scooter frame, in the photo's colours (and with its kickstand, if it has one)."""
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


def pose(p: PhotoParams) -> np.ndarray:
    """Rotation from the scooter frame to the world (X right, Y away from the camera, Z up)."""
    heading = math.radians((270.0 if p.from_front else 90.0) + p.turn_deg)
    # roll about the contact line; its sign makes the stem lean to the asked side of the image
    sign = (1.0 if p.lean == "right" else -1.0) * (1.0 if math.sin(heading) > 0 else -1.0)
    r = math.radians(p.tilt_deg) * sign
    roll = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ch, sh = math.cos(heading), math.sin(heading)
    yaw = np.array([[ch, -sh, 0], [sh, ch, 0], [0, 0, 1]])
    return yaw @ roll


def project(p: PhotoParams, world: Points) -> tuple[np.ndarray, np.ndarray]:
    """World points → (image points before the camera roll, in metres at the contact's depth; depth)."""
    e = math.radians(p.elevation_deg)
    x, y, z = world[:, 0], world[:, 1], world[:, 2]
    up = z * math.cos(e) + y * math.sin(e)
    depth = y * math.cos(e) - z * math.sin(e)
    f = p.distance_m / np.maximum(p.distance_m + depth, 0.3)
    return np.stack([x * f, up * f], axis=1), depth


def to_px(
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


def shaded(colour: Rgb, factor: float) -> Rgb:
    """``colour`` darkened (``factor`` < 1) or lit (> 1), clipped to 255."""
    return (
        min(255, int(colour[0] * factor)),
        min(255, int(colour[1] * factor)),
        min(255, int(colour[2] * factor)),
    )


def _flat(pts: np.ndarray) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in pts]


def object_layer(p: PhotoParams) -> tuple[Image.Image, tuple[int, int]]:
    """The scooter alone (RGBA, its alpha the object mask) and where its top-left corner goes in the frame."""
    rot = pose(p)
    parts = scooter_parts(p)
    e = math.radians(p.elevation_deg)
    view = np.array([0.0, math.cos(e), -math.sin(e)])  # from the camera into the scene
    light = np.array([-0.4, -0.5, 0.77])
    projected = []
    for part in parts:
        world = part.points @ rot.T
        uv, depth = project(p, world)
        projected.append((float(depth.mean()), part, world, uv))
    all_px = to_px(p, np.concatenate([uv for *_, uv in projected]))
    pad = 0.06 * p.scale_px_per_m + 4
    x0, y0 = np.floor(all_px.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(all_px.max(axis=0) + pad).astype(int)
    k = _SUPERSAMPLE
    layer = Image.new("RGBA", (int(x1 - x0) * k, int(y1 - y0) * k), (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)
    for _depth, part, world, uv in sorted(projected, key=lambda item: -item[0]):
        px = to_px(p, uv, k, (float(x0), float(y0)))
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
            colour = shaded(colour, 0.55 + 0.6 * max(0.0, float(normal @ light)))
        shape = _hull(px) if part.kind == "hull" else px
        pen.polygon(_flat(shape), fill=(*colour, 255))
    layer = layer.reduce(k)
    return layer, (int(x0), int(y0))


def shadow_mask(p: PhotoParams, shrink: int = 4) -> Image.Image:
    """A soft shadow on the ground: the scooter's parts flattened along the sun's direction."""
    w, h = p.size
    rot = pose(p)
    mask = Image.new("L", (w // shrink + 1, h // shrink + 1), 0)
    pen = ImageDraw.Draw(mask)
    for part in scooter_parts(p):
        world = part.points @ rot.T
        flat = world.copy()
        flat[:, 0] += world[:, 2] * p.sun[0]
        flat[:, 1] += world[:, 2] * p.sun[1]
        flat[:, 2] = 0.0
        px = to_px(p, project(p, flat)[0], 1.0 / shrink)
        if part.kind == "line":
            pen.line(_flat(px), fill=255, width=max(1, int(part.width_m * p.scale_px_per_m / shrink)))
        else:
            pen.polygon(_flat(_hull(px)), fill=255)
    return mask.filter(ImageFilter.BoxBlur(max(1.0, p.scale_px_per_m * 0.03 / shrink)))
