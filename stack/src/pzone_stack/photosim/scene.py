"""The photo around the scooter, and the camera: background above a ground line, shadow, occluder, lighting,
colour cast, blur and sensor noise. :func:`draw` composes it all and is a pure function of the
:class:`~pzone_stack.photosim.params.PhotoParams` (its texture noise comes from ``params.seed``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from pzone_stack.photosim.params import PhotoParams, Rgb
from pzone_stack.photosim.scooter import object_layer, project, shaded, shadow_mask, to_px


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
        lpen.rectangle((cx - half * 0.4, -10, cx - half * 0.1, ground_y + 0.1 * s), fill=shaded(col, 1.5))
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
            (cx - bw / 2, ground_y - bh * 0.55, cx + bw / 2, ground_y - bh * 0.5), fill=shaded(col, 0.6)
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
        lpen.rectangle((cx - bw / 2, ground_y - bh, cx + bw / 2, ground_y - bh * 0.9), fill=shaded(col, 0.7))
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
    contact = to_px(p, np.zeros((1, 2)))[0]
    line = to_px(p, project(p, np.array([[0.0, p.wall_distance_m, 0.0]]))[0])[0]
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
    shadow = shadow_mask(p, shrink)
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
    layer, at = object_layer(p)
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
    layer, at = object_layer(p)
    mask = Image.new("L", (w, h), 0)
    mask.paste(layer.getchannel("A"), at)
    return mask
