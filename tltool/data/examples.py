"""Example datasets built offline from data that a dependency already ships."""

from __future__ import annotations

import os

import numpy as np

from tltool.errors import TltoolError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
EXAMPLES = {"digits": "scikit-learn's 1,797 handwritten digits (8x8, upscaled), 10 classes"}


MARKER = ".tltool-example"


def build_example(name: str, dest: str, size: int = 32) -> dict[str, int] | None:
    """Write an example dataset as class folders of PNG files.

    Running it again on a folder that already holds the same example does
    nothing (a hidden marker file records what was written).

    Returns:
        class name -> number of images written, or None if already there.

    Raises:
        TltoolError: unknown example, or `dest` holds something else.
    """
    if name not in EXAMPLES:
        raise TltoolError(f"no example dataset {name!r}; available: {', '.join(EXAMPLES)}")
    marker = os.path.join(dest, MARKER)
    stamp = f"{name} {size}\n"
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            if f.read() == stamp:
                return None
    if os.path.isdir(dest) and os.listdir(dest):
        raise TltoolError(f"{dest}: exists and is not empty; choose an empty or new folder")
    counts = _digits(dest, size)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(stamp)
    return counts


def _digits(dest: str, size: int) -> dict[str, int]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = {}
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        label = DIGIT_NAMES[target]
        folder = os.path.join(dest, label)
        os.makedirs(folder, exist_ok=True)
        gray = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(gray, mode="L").resize((size, size), Image.BICUBIC).save(
            os.path.join(folder, f"{label}_{i:04d}.png"))
        counts[label] = counts.get(label, 0) + 1
    return counts
