"""Embeddings for the data audit: the backbone's pooled features of each image, computed once and cached.

An embedding is what the classifier's head reads (`Backbone.pooling`), for
the image as training sees it (the input contract, no augmentation): from a
pretrained backbone, or from a run's fine-tuned model (``--model RUN``).

The cache is `tltool.training.feature_store`: one file per model, keyed by
the backbone, its weights, the image size, the aspect policy and the pooling;
inside, one row per file content (its SHA-1), so a renamed or moved file is
not computed again, a later `fit` with the same backbone reads them, and
nothing is ever written beside the images.
"""

from __future__ import annotations

import numpy as np

from tltool.errors import TltoolError
from tltool.files import file_hash
from tltool.training.feature_store import load, save, store_key


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
        key = store_key(spec, weights, image_size, aspect, "auto") or \
            f"{spec.identity()}-none-seed{seed}-{image_size}-{aspect}-auto"  # audit's own, never fit's
        return cls(clf.features, image_size, aspect, key)

    @classmethod
    def from_model(cls, path: str, model, image_size: int, aspect: str) -> "Embedder":
        """A trained classifier's pooled features: its layers up to the one after its backbone."""
        import keras

        from tltool.models.backbone import call_network
        from tltool.models.classifier import split_classifier

        before, network, after = split_classifier(model)
        image = keras.Input((image_size, image_size, 3))
        x = image
        for layer in before:
            x = layer(x)
        pooled = after[0](call_network(network, x))
        return cls(keras.Model(image, pooled), image_size, aspect, f"model-{file_hash(path)}-{aspect}")

    def embed(self, paths: list[str], sha1s: list[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
        """(N, D) float32, a row per path; files already in the cache are not computed again.

        Raises:
            TltoolError: a file that no longer decodes.
        """
        known = load(self.key)
        todo = sorted({s for s in sha1s if s not in known})
        if todo:
            path_of = {}
            for path, sha1 in zip(paths, sha1s):
                path_of.setdefault(sha1, path)  # the first file of each content: copies embed alike
            computed = self._compute([path_of[s] for s in todo], batch_size, progress)
            known.update(zip(todo, computed))
            save(self.key, known)
        return np.stack([known[s] for s in sha1s]).astype(np.float32) if sha1s else np.zeros((0, 0), np.float32)

    def _compute(self, paths: list[str], batch_size: int, progress: bool) -> np.ndarray:
        from tltool.models.classifier import forward_function
        from tltool.serving.loading import predict_images

        rows, kept = predict_images(forward_function(self.features, self.image_size), paths, self.image_size,
                                    self.aspect, batch_size, progress, desc="embedding")  # rows in `paths` order
        if len(kept) < len(paths):
            lost = sorted(set(range(len(paths))) - set(kept.tolist()))
            raise TltoolError(f"{len(lost)} image(s) no longer decode since the scan, e.g. {paths[lost[0]]}; check "
                              "them with `tltool inspect` and audit again")
        return rows.astype(np.float32)
