"""Pooled features kept across runs: `$TLTOOL_CACHE_DIR/features/<key>.npz`, one row per file content (SHA-1).

`audit` writes every image's embedding here; a later `audit` or `fit` with the
same backbone, weights, input contract, size, aspect and pooling reads them instead of
running the backbone again (`fit` for the views it would compute without
augmentation: validation, and training images when the recipe does not
augment). Random weights (``--weights none``) and mixed precision are never
shared: their features are not the same twice. `fit` reads them only while
no phase has trained the backbone. Nothing here is written beside the images.
"""

from __future__ import annotations

import os

import numpy as np

from tltool.files import atomic_path, file_hash


def store_key(spec, weights: str, image_size: int, aspect: str, pooling: str) -> str | None:
    """The cache's name for one model's features; None where they are not shared (random weights).

    It names the backbone (for a local preset, a hash of its files: two folders of one name, or a preset saved
    back into its own folder, never share), its starting weights, the input contract's version (a decoder that
    changes never reuses old rows), the size, the aspect policy and the pooling.
    """
    from tltool.data.contract import VERSION

    if weights == "none":
        return None
    made = weights if weights in ("imagenet", "pretrained") else file_hash(weights)
    return f"{spec.identity()}-{made}-c{VERSION}-{image_size}-{aspect}-{pooling}"


def load(key: str) -> dict[str, np.ndarray]:
    try:
        with np.load(_path(key)) as data:
            return dict(zip(data["sha1"].tolist(), data["vectors"]))
    except (OSError, ValueError, KeyError):
        return {}


def save(key: str, known: dict[str, np.ndarray]) -> None:
    try:
        os.makedirs(os.path.dirname(_path(key)), exist_ok=True)
        with atomic_path(_path(key)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, sha1=np.array(list(known)), vectors=np.stack(list(known.values())))
    except OSError:
        pass  # a read-only cache only costs the speed-up


def known_rows(key: str | None, sha1s: list[str]) -> np.ndarray | None:
    """The stored features of every file, in order; None unless all of them are stored."""
    known = load(key) if key and sha1s else {}
    if not known or any(s not in known for s in sha1s):
        return None
    return np.stack([known[s] for s in sha1s]).astype(np.float32)


def _path(key: str) -> str:
    from tltool.data.check import cache_dir

    return os.path.join(cache_dir(), "features", f"{key}.npz")
