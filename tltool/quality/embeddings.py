"""Embeddings for the data audit: the backbone's pooled features of each image, computed once and cached.

An embedding is what the classifier's head reads (`Backbone.pooling`), for
the image as training sees it (the input contract, no augmentation): from a
pretrained backbone, or from a run's fine-tuned model (``--model RUN``).

The cache is ``$TLTOOL_CACHE_DIR/features/<key>.npz``, one file per model,
keyed by the backbone, its weights, the image size and the aspect policy;
inside, one row per file content (its SHA-1), so a renamed or moved file is
not computed again and nothing is ever written beside the images.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from tltool.errors import TltoolError
from tltool.files import atomic_path


class Embedder:
    """Pooled features of image files, through a model's layers up to its pooling; `key` names its cache."""

    def __init__(self, features, image_size: int, aspect: str, key: str):
        self.features, self.image_size, self.aspect, self.key = features, image_size, aspect, key

    @classmethod
    def from_backbone(cls, spec, weights: str, image_size: int, aspect: str, seed: int) -> "Embedder":
        import keras

        from tltool.models.classifier import build_classifier
        from tltool.recipe.schema import Augment, Head

        keras.utils.set_random_seed(seed)  # `--weights none` embeds with the same random network every time
        backbone = spec.build(image_size, weights)
        clf = build_classifier(backbone, 2, image_size, Head(), Augment())
        made = f"none-seed{seed}" if weights == "none" else weights if weights in ("imagenet", "pretrained") \
            else _file_hash(weights)
        return cls(clf.features, image_size, aspect, f"{spec.label}-{made}-{image_size}-{aspect}")

    @classmethod
    def from_model(cls, path: str, model, image_size: int, aspect: str) -> "Embedder":
        """A trained classifier's pooled features: its layers up to the one after its backbone."""
        import keras

        from tltool.evaluation.gradcam import split_classifier
        from tltool.models.backbone import call_network

        before, network, after = split_classifier(model)
        image = keras.Input((image_size, image_size, 3))
        x = image
        for layer in before:
            x = layer(x)
        pooled = after[0](call_network(network, x))
        return cls(keras.Model(image, pooled), image_size, aspect, f"model-{_file_hash(path)}-{aspect}")

    def embed(self, paths: list[str], sha1s: list[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """(N, D) float32, a row per path; files already in the cache are not computed again.

        Raises:
            TltoolError: a file that no longer decodes.
        """
        cache = os.path.join(_cache_root(), f"{self.key}.npz")
        known = _load(cache)
        todo = sorted({s for s in sha1s if s not in known})
        if todo:
            first = {s: p for p, s in zip(paths, sha1s)}
            computed = self._compute([first[s] for s in todo], batch_size, progress)
            known.update(zip(todo, computed))
            _save(cache, known)
        return np.stack([known[s] for s in sha1s]).astype(np.float32) if sha1s else np.zeros((0, 0), np.float32)

    def _compute(self, paths: list[str], batch_size: int, progress: bool) -> np.ndarray:
        import tensorflow as tf
        from tqdm import tqdm

        from tltool.data.pipeline import decode_dataset, finish
        from tltool.models.classifier import forward_function

        forward = forward_function(self.features, self.image_size)
        ds = finish(decode_dataset(paths, self.image_size, self.aspect, ordered=False).batch(batch_size)
                    .prefetch(tf.data.AUTOTUNE))
        rows, order = [], []
        with tqdm(total=len(paths), desc="embedding", unit="img", disable=None if progress else True,
                  leave=False) as bar:
            for images, index in ds:
                rows.append(np.asarray(forward(tf.cast(images, tf.float32))))
                order.append(np.asarray(index))
                bar.update(len(order[-1]))
        order = np.concatenate(order) if order else np.zeros(0, np.int64)
        if len(order) < len(paths):
            lost = sorted(set(range(len(paths))) - set(order.tolist()))
            raise TltoolError(f"{len(lost)} image(s) no longer decode since the scan, e.g. {paths[lost[0]]}; check "
                              "them with `tltool inspect` and audit again")
        out = np.zeros((len(paths), rows[0].shape[1]), np.float32)
        out[order] = np.concatenate(rows)
        return out


def _cache_root() -> str:
    from tltool.data.check import cache_dir

    return os.path.join(cache_dir(), "features")


def _file_hash(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _load(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return dict(zip(data["sha1"].tolist(), data["vectors"]))
    except (OSError, ValueError, KeyError):
        return {}


def _save(path: str, known: dict[str, np.ndarray]) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, sha1=np.array(list(known)), vectors=np.stack(list(known.values())))
    except OSError:
        pass  # a read-only cache only costs the speed-up
