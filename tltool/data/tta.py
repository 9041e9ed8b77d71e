"""Test-time augmentation: average a model's probabilities over fixed views of each image.

The views are deterministic: the image itself, its mirror images where the
run's recipe trained with flips (a mirrored digit is another digit), then
crops of 90% and 80% of the side (centre, then corners) scaled back to the
model's size. `views(n, flip)` lists the first n.

The exported model does not do this: a served model sees one view, so the
headline figures of a report are always those without TTA.
"""

from __future__ import annotations

_CROPS = [("centre", 0.9, (0.5, 0.5)), ("top-left", 0.9, (0.0, 0.0)), ("top-right", 0.9, (0.0, 1.0)),
          ("bottom-left", 0.9, (1.0, 0.0)), ("bottom-right", 0.9, (1.0, 1.0)), ("centre", 0.8, (0.5, 0.5))]


def available_views(flip: str) -> list[str]:
    """Every view for a run whose recipe used `flip` (none | horizontal | vertical | both)."""
    mirrors = {"horizontal": ["mirror"], "vertical": ["upside-down"], "both": ["mirror", "upside-down"]}
    return ["plain", *mirrors.get(flip, []), *(f"{where} {int(side * 100)}%" for where, side, _ in _CROPS)]


def views(n: int, flip: str) -> list[str]:
    """The first n views.

    Raises:
        TltoolError: n < 1 or more views than there are.
    """
    from tltool.errors import TltoolError

    names = available_views(flip)
    if not 1 <= n <= len(names):
        raise TltoolError(f"--tta {n}: give 1 to {len(names)} views ({', '.join(names)})")
    return names[:n]


def apply_view(images, name: str):
    """One view of a float32 (N, S, S, 3) batch, same shape."""
    import tensorflow as tf

    if name == "plain":
        return images
    if name == "mirror":
        return tf.reverse(images, [2])
    if name == "upside-down":
        return tf.reverse(images, [1])
    where, percent = name.rsplit(" ", 1)
    side = int(percent[:-1]) / 100
    y, x = next(anchor for w, s, anchor in _CROPS if w == where and s == side)
    top, left = y * (1 - side), x * (1 - side)
    boxes = tf.tile([[top, left, top + side, left + side]], [tf.shape(images)[0], 1])
    size = tf.shape(images)[1:3]
    return tf.image.crop_and_resize(images, boxes, tf.range(tf.shape(images)[0]), size, method="bilinear")
