"""Learning curves as a PNG with Pillow (a dependency already): mean lines and +-std bands per algo.

Plain on purpose: axes with their ranges, one colour per curve, a legend; the numbers themselves
are in the summary beside the picture.
"""
from __future__ import annotations

from pathlib import Path

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75))
SIZE, MARGIN = (800, 500), (70, 40, 30, 50)  # width, height; left, top, right, bottom


def plot_curves(curves: dict[str, dict], title: str, path: Path) -> None:
    """``curves``: ``{name: {"env_steps": [...], "mean": [...], "std": [...]}}`` (``bench.learn.curves``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_curves(curves, title).save(path)


def draw_curves(curves: dict[str, dict], title: str, x_label: str = "environment steps"):
    """The picture ``plot_curves`` saves, as a PIL image; ``x_label`` names what ``env_steps`` counts."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image, "RGBA")
    xs = [x for c in curves.values() for x in c["env_steps"]]
    ys = [m + sign * s for c in curves.values() for m, s in zip(c["mean"], c["std"]) for sign in (-1, 1)]
    x_range = (min(xs), max(xs)) if max(xs) > min(xs) else _padded(min(xs), max(xs))  # x labels at the data's ends
    y_range = _padded(min(ys), max(ys))
    to_pixel = _mapping(x_range, y_range)
    left, top, right, bottom = MARGIN
    draw.rectangle((left, top, SIZE[0] - right, SIZE[1] - bottom), outline="black")
    draw.text((left, 10), title, fill="black")
    for value, anchor in ((x_range[0], "la"), (x_range[1], "ra")):
        draw.text((to_pixel(value, y_range[0])[0], SIZE[1] - bottom + 5), f"{value:g}", fill="black", anchor=anchor)
    draw.text((SIZE[0] // 2, SIZE[1] - 15), x_label, fill="black", anchor="ma")
    for value in y_range:
        decimals = 0 if y_range[1] - y_range[0] >= 10 else 2  # returns in whole units; metres, seconds finer
        draw.text((left - 5, to_pixel(x_range[0], value)[1]), f"{value:.{decimals}f}", fill="black", anchor="rm")
    for k, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[k % len(COLOURS)]
        upper = [to_pixel(x, m + s) for x, m, s in zip(curve["env_steps"], curve["mean"], curve["std"])]
        lower = [to_pixel(x, m - s) for x, m, s in zip(curve["env_steps"], curve["mean"], curve["std"])]
        if len(upper) > 1:
            draw.polygon(upper + lower[::-1], fill=(*colour, 50))
        line = [to_pixel(x, m) for x, m in zip(curve["env_steps"], curve["mean"])]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        else:
            draw.ellipse(_dot(line[0]), fill=colour)
        seeds = f" ({curve['seeds']} seeds)" if "seeds" in curve else ""
        draw.text((left + 10, top + 10 + 15 * k), f"{name}{seeds}", fill=colour)
    return image


def _padded(low: float, high: float) -> tuple[float, float]:
    pad = 0.05 * (high - low) if high > low else 1.0
    return low - pad, high + pad


def _mapping(x_range, y_range):
    left, top, right, bottom = MARGIN
    width, height = SIZE[0] - left - right, SIZE[1] - top - bottom

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_range[0]) / (x_range[1] - x_range[0]) * width,
                top + (y_range[1] - y) / (y_range[1] - y_range[0]) * height)
    return to_pixel


def _dot(point, radius: float = 3.0):
    return (point[0] - radius, point[1] - radius, point[0] + radius, point[1] + radius)
