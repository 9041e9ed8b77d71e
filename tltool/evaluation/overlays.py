"""Heatmaps drawn over images: `explain`'s overlay files and the reports' gallery of mistakes."""

from __future__ import annotations

import numpy as np

LONGEST_SIDE = 1024  # an overlay file is the image at most this size: a 24-megapixel photo would give 70 MB PNGs
SHORTEST_LONG_SIDE = 256  # and at least this, so a thumbnail's caption stays readable
OPACITY = 0.45


def blend(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB with a (H, W) heatmap in 0-1 over it (matplotlib's jet; stronger where hotter)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    alpha = OPACITY * (0.3 + 0.7 * np.clip(heatmap, 0, 1))[..., None]
    return np.round((1 - alpha) * image + alpha * 255 * colours).astype(np.uint8)


def resized(image: np.ndarray, heatmap: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and its heatmap with the longer side `longest` px (the image LANCZOS, the map bilinear)."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)
    heat = Image.fromarray(np.asarray(heatmap, np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(picture), np.asarray(heat, np.float32)


def write_overlay(path: str, image: np.ndarray, heatmap: np.ndarray, caption: str) -> None:
    """The image with its heatmap (its longer side brought within 256-1024 px) under a bar with `caption`, as PNG."""
    from PIL import Image, ImageDraw, ImageFont

    from tltool.files import atomic_path

    longest = min(max(max(image.shape[:2]), SHORTEST_LONG_SIDE), LONGEST_SIDE)
    picture = Image.fromarray(blend(*resized(image, heatmap, longest)))
    font = ImageFont.load_default(size=max(12, picture.width // 32))
    bar = int(font.size * 1.6)
    canvas = Image.new("RGB", (picture.width, picture.height + bar), "white")
    canvas.paste(picture, (0, bar))
    ImageDraw.Draw(canvas).text((4, bar // 2), caption, fill="black", font=font, anchor="lm")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
