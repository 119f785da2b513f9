"""Pillow drawing helpers: fonts, shapes, icons, text, degradation and byte-stable PNG output.

All geometry is given in pixels of a square canvas of side ``S``; callers derive it from normalised
coordinates so that the same scene can be drawn at any ``image_size``.
"""
from __future__ import annotations

import importlib.util
import math
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]

# Dark colour for the parts of icons that are not the object's colour (tree trunk, flag pole...).
DARK: RGB = (70, 55, 45)
_FONT_FILE = "DejaVuSans-Bold.ttf"
_FONT_FALLBACKS = ("DejaVuSans.ttf",)


@lru_cache(maxsize=1)
def font_path() -> str | None:
    """Path of the DejaVu Sans (bold if present) TrueType font, or None to use Pillow's own font.

    matplotlib ships DejaVu in mpl-data; it is located without importing matplotlib (slow).
    """
    dirs: list[Path] = []
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    dirs += [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/TTF"),
             Path("/usr/share/fonts/dejavu"), Path("/usr/share/fonts/dejavu-sans-fonts")]
    for name in (_FONT_FILE, *_FONT_FALLBACKS):
        for d in dirs:
            if (d / name).is_file():
                return str(d / name)
    return None


@lru_cache(maxsize=64)
def get_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font of pixel ``size``: DejaVu Sans Bold if found, else Pillow's default font."""
    path = font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    try:  # Pillow >= 10.1 can scale its built-in font when FreeType is available.
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def canvas(size: int, background: RGB) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A new RGB image filled with ``background`` and a drawing context on it."""
    img = Image.new("RGB", (size, size), background)
    return img, ImageDraw.Draw(img)


def to_px(box: tuple[float, float, float, float], size: int) -> Box:
    """Normalised box to integer pixel box (x2, y2 exclusive)."""
    return tuple(int(round(v * size)) for v in box)  # type: ignore[return-value]


def _star(cx: float, cy: float, r_out: float, r_in: float, points: int = 5) -> list[tuple[float, float]]:
    pts = []
    for k in range(points * 2):
        r = r_out if k % 2 == 0 else r_in
        a = -math.pi / 2 + k * math.pi / points
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def draw_shape(d: ImageDraw.ImageDraw, shape: str, box: Box, fill: RGB) -> None:
    """Draw one of the scene shapes filling the pixel ``box``."""
    x1, y1, x2, y2 = box
    x2, y2 = x2 - 1, y2 - 1  # Pillow's rectangles include their end pixel
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if shape == "circle":
        d.ellipse((x1, y1, x2, y2), fill=fill)
    elif shape == "square":
        d.rectangle((x1 + 0.06 * w, y1 + 0.06 * h, x2 - 0.06 * w, y2 - 0.06 * h), fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    elif shape == "star":
        # A fat star (inner radius 0.5) stays recognisable at ~17 px.
        d.polygon(_star(cx, cy + 0.06 * h, w / 2, w / 4.2), fill=fill)
    elif shape == "cross":
        t = w / 6
        d.rectangle((cx - t, y1, cx + t, y2), fill=fill)
        d.rectangle((x1, cy - t, x2, cy + t), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_icon(d: ImageDraw.ImageDraw, icon: str, box: Box, fill: RGB, bg: RGB) -> None:
    """Draw one of the ImageNet-like icon classes filling the pixel ``box``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    if icon == "house":
        d.polygon([(x1, y1 + 0.45 * h), (cx, y1), (x2, y1 + 0.45 * h)], fill=fill)
        d.rectangle((x1 + 0.14 * w, y1 + 0.44 * h, x2 - 0.14 * w, y2), fill=fill)
        d.rectangle((cx - 0.09 * w, y2 - 0.3 * h, cx + 0.09 * w, y2), fill=bg)
    elif icon == "tree":
        d.rectangle((cx - 0.09 * w, y1 + 0.55 * h, cx + 0.09 * w, y2), fill=DARK)
        d.ellipse((x1 + 0.08 * w, y1, x2 - 0.08 * w, y1 + 0.68 * h), fill=fill)
    elif icon == "star":
        d.polygon(_star(cx, cy + 0.05 * h, w / 2, w / 4.2), fill=fill)
    elif icon == "heart":
        r = w / 4
        d.ellipse((x1, y1 + 0.08 * h, x1 + 2 * r, y1 + 0.08 * h + 2 * r), fill=fill)
        d.ellipse((x2 - 2 * r, y1 + 0.08 * h, x2, y1 + 0.08 * h + 2 * r), fill=fill)
        d.polygon([(x1 + 0.02 * w, y1 + 0.08 * h + 1.2 * r), (x2 - 0.02 * w, y1 + 0.08 * h + 1.2 * r),
                   (cx, y2)], fill=fill)
    elif icon == "arrow":
        d.rectangle((x1, cy - 0.12 * h, x1 + 0.55 * w, cy + 0.12 * h), fill=fill)
        d.polygon([(x1 + 0.5 * w, y1 + 0.1 * h), (x2, cy), (x1 + 0.5 * w, y2 - 0.1 * h)], fill=fill)
    elif icon == "cross":
        t = w / 6
        d.rectangle((cx - t, y1, cx + t, y2), fill=fill)
        d.rectangle((x1, cy - t, x2, cy + t), fill=fill)
    elif icon == "moon":
        d.ellipse((x1, y1, x2, y2), fill=fill)
        d.ellipse((x1 + 0.35 * w, y1 - 0.1 * h, x2 + 0.35 * w, y2 - 0.1 * h), fill=bg)
    elif icon == "fish":
        d.polygon([(x1, y1 + 0.2 * h), (x1 + 0.32 * w, cy), (x1, y2 - 0.2 * h)], fill=fill)
        d.ellipse((x1 + 0.22 * w, y1 + 0.22 * h, x2, y2 - 0.22 * h), fill=fill)
        e = 0.06 * w
        d.ellipse((x2 - 0.22 * w - e, cy - 0.08 * h - e, x2 - 0.22 * w + e, cy - 0.08 * h + e), fill=bg)
    elif icon == "flag":
        d.rectangle((x1 + 0.08 * w, y1, x1 + 0.18 * w, y2), fill=DARK)
        d.rectangle((x1 + 0.18 * w, y1 + 0.04 * h, x2, y1 + 0.56 * h), fill=fill)
    elif icon == "umbrella":
        d.pieslice((x1, y1 + 0.05 * h, x2, y1 + 0.05 * h + 0.9 * h), 180, 360, fill=fill)
        d.rectangle((cx - 0.05 * w, y1 + 0.48 * h, cx + 0.05 * w, y2), fill=DARK)
        d.rectangle((cx - 0.25 * w, y2 - 0.1 * h, cx + 0.05 * w, y2), fill=DARK)
    else:
        raise ValueError(f"unknown icon {icon!r}")


def draw_text(d: ImageDraw.ImageDraw, text: str, center: tuple[float, float], size: int, fill: RGB) -> Box:
    """Draw ``text`` centred (by its ink box) on ``center``; returns the ink box in pixels."""
    font = get_font(size)
    l, t, r, b = d.textbbox((0, 0), text, font=font)
    x = round(center[0] - (l + r) / 2)
    y = round(center[1] - (t + b) / 2)
    d.text((x, y), text, font=font, fill=fill)
    return (x + l, y + t, x + r, y + b)


def text_extent(text: str, size: int) -> tuple[int, int]:
    """Width and height of the ink box of ``text`` at pixel ``size``."""
    l, t, r, b = get_font(size).getbbox(text)
    return r - l, b - t


def degrade(img: Image.Image, rng: random.Random) -> Image.Image:
    """VizWiz-style degradation: lowered contrast, blur and Gaussian pixel noise.

    Strengths are drawn from ``rng``; the noise comes from a NumPy generator seeded from it, so the
    result is a pure function of the rng state.
    """
    s = img.size[0] / 64  # blur radius scales with the image so the look does not change
    grey = Image.new("RGB", img.size, (128, 128, 128))
    img = Image.blend(img, grey, rng.uniform(0.25, 0.45))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.1) * s))
    noise_rng = np.random.Generator(np.random.PCG64(rng.getrandbits(63)))
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + noise_rng.normal(0.0, rng.uniform(8.0, 18.0), size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def save_png(img: Image.Image, path: Path) -> None:
    """Write ``img`` as PNG with fixed options (no metadata, fixed zlib level) for stable bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=False, compress_level=6)
