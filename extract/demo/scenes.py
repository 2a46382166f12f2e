"""Compose the corpus's pictures from cropped RGBA icons.

Train and valid pictures are *scenes*: the object at a random scale, position and rotation on a busy
or coloured background, sometimes beside a smaller distractor object, so that a model cannot solve the
task from the background or from the object filling the frame. Test pictures imitate the paper's masked
test images: the object alone on white, varied in size, position, flip and rotation.
All randomness comes from the `numpy.random.Generator` passed in.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 256
DISTRACTOR_P = 0.4
MIN_CONTRAST = 60  # luminance difference (0..255) between an object and the background behind it
WHITE_MARGIN = 6  # px of pure white kept around a test object so that the border stays white


def _colour(rng: np.random.Generator, max_brightness: int = 235) -> tuple[int, int, int]:
    """A random colour that is never near white, so that no scene background looks like a test picture."""
    c = rng.integers(0, 256, size=3)
    if c.min() > max_brightness - 40:
        c[rng.integers(0, 3)] = rng.integers(0, 160)
    return tuple(int(v) for v in c)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return a * (1 - t[..., None]) + b * t[..., None]


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    k = int(rng.integers(3, 13))
    small = Image.fromarray(rng.integers(0, 256, size=(k, k, 3), dtype=np.uint8))
    smooth = np.asarray(small.resize((size, size), Image.BICUBIC), float)
    return smooth + rng.normal(0, 8, size=smooth.shape)


def _clutter(rng: np.random.Generator, size: int) -> Image.Image:
    base = _gradient(rng, size) if rng.random() < 0.5 else np.full((size, size, 3), _colour(rng), float)
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 31))):
        xs = sorted(int(v) for v in rng.integers(-size // 4, size + size // 4, size=2))
        ys = sorted(int(v) for v in rng.integers(-size // 4, size + size // 4, size=2))
        box = (xs[0], ys[0], xs[1], ys[1])
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle(box, fill=_colour(rng))
        elif shape == 1:
            draw.ellipse(box, fill=_colour(rng))
        else:
            draw.line(box, fill=_colour(rng), width=int(rng.integers(2, 9)))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))


def background(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """One of four procedural backgrounds: solid colour, gradient, smooth colour noise, clutter."""
    kind = rng.integers(0, 4)
    if kind == 3:
        return _clutter(rng, size)
    if kind == 0:
        arr = np.full((size, size, 3), _colour(rng), float)
    elif kind == 1:
        arr = _gradient(rng, size)
    else:
        arr = _noise(rng, size)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(float) @ np.array([0.299, 0.587, 0.114])


def _contrasting_background(rng: np.random.Generator, obj: Image.Image, pos: tuple[int, int], size: int,
                            min_contrast: float = MIN_CONTRAST, tries: int = 10) -> Image.Image:
    """A background on which the object stands out: a black line drawing on a dark background, or a
    white sheep on a pale one, is a picture no one could name. Redraws up to `tries` times."""
    alpha = np.asarray(obj.getchannel("A"), float) / 255
    obj_lum = float((_luminance(np.asarray(obj)) * alpha).sum() / max(alpha.sum(), 1))
    x0, y0 = max(pos[0], 0), max(pos[1], 0)
    x1, y1 = min(pos[0] + obj.width, size), min(pos[1] + obj.height, size)
    best = None
    for _ in range(tries):
        bg = background(rng, size)
        region = _luminance(np.asarray(bg)[y0:y1, x0:x1])
        contrast = abs(float(region.mean()) - obj_lum) if region.size else 255.0
        if best is None or contrast > best[0]:
            best = (contrast, bg)
        if contrast >= min_contrast:
            break
    return best[1].convert("RGBA")


def prepare(obj: Image.Image, longest: float, angle: float = 0.0, flip: bool = False) -> Image.Image:
    """Scale a cropped RGBA icon so its longest side is `longest` px, then flip and rotate it."""
    s = longest / max(obj.size)
    out = obj.resize((max(1, round(obj.width * s)), max(1, round(obj.height * s))), Image.LANCZOS)
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if angle:
        out = out.rotate(angle, resample=Image.BICUBIC, expand=True)
        box = out.getchannel("A").getbbox()
        out = out.crop(box) if box else out
    return out


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area as a share of the smaller box (boxes are x, y, w, h)."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0) / max(min(a[2] * a[3], b[2] * b[3]), 1)


def _place(rng: np.random.Generator, obj: Image.Image, size: int, overflow: float = 0.05) -> tuple[int, int]:
    slack = int(overflow * size)
    x = int(rng.integers(-slack, max(size - obj.width + slack, -slack) + 1))
    y = int(rng.integers(-slack, max(size - obj.height + slack, -slack) + 1))
    return x, y


def compose_scene(target: Image.Image, rng: np.random.Generator, distractor: Image.Image | None = None,
                  size: int = IMAGE_SIZE) -> Image.Image:
    """A train/valid picture: `target` on a random background, with `distractor` (smaller) if given."""
    obj = prepare(target, rng.uniform(0.40, 0.75) * size, rng.uniform(-25, 25), bool(rng.random() < 0.5))
    pos = _place(rng, obj, size)
    canvas = _contrasting_background(rng, obj, pos, size)
    if distractor is not None:
        small = prepare(distractor, rng.uniform(0.20, 0.35) * size, rng.uniform(-30, 30), bool(rng.random() < 0.5))
        target_box = (*pos, obj.width, obj.height)
        best = None
        for _ in range(20):  # rejection sampling: a distractor hidden behind the target teaches nothing
            spot = _place(rng, small, size, overflow=0.0)
            share = _overlap(target_box, (*spot, small.width, small.height))
            if best is None or share < best[0]:
                best = (share, spot)
            if share <= 0.15:
                break
        canvas.paste(small, best[1], small)
    canvas.paste(obj, pos, obj)
    return canvas.convert("RGB")


def compose_test(target: Image.Image, rng: np.random.Generator, size: int = IMAGE_SIZE) -> Image.Image:
    """A test picture: the object alone on white, at a random size, position, flip and small rotation."""
    obj = prepare(target, rng.uniform(0.55, 0.85) * size, rng.uniform(-15, 15), bool(rng.random() < 0.5))
    room = size - 2 * WHITE_MARGIN
    if max(obj.size) > room:
        obj = prepare(obj, room)
    x = WHITE_MARGIN + int(rng.integers(0, room - obj.width + 1))
    y = WHITE_MARGIN + int(rng.integers(0, room - obj.height + 1))
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(obj, dest=(x, y))
    return canvas.convert("RGB")
