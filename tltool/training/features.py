"""Feature caching: frozen phases train the head on backbone features computed once.

While a phase trains nothing of the backbone, the pooled backbone output of
an image never changes, yet a plain Keras loop recomputes it every epoch.
Here it is computed once per image (and per augmented view, when the recipe
augments: epoch e of a phase trains on view e mod k), kept in memory when it fits or in
a memory-mapped file under the run directory otherwise, and the head trains
on it. The head's layers are the classifier's own, so the full model ends up
exactly as if it had been trained end to end.

The training order matches the image pipeline's: the same elements, shuffled
with the same window and seed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from tltool.console import say
from tltool.data.pipeline import finish, memory_budget


@dataclass
class FeatureCache:
    train: np.ndarray  # (views, N, D); np.memmap when on disk
    train_labels: np.ndarray
    val: np.ndarray | None
    val_labels: np.ndarray | None
    encode: object  # batched targets -> what the loss takes (the task's `encode`)

    @property
    def views(self) -> int:
        return self.train.shape[0]

    def train_dataset(self, batch_size: int, seed: int, window: int, epoch: int = 0):
        """Epoch `epoch` of a phase: its view of every image (view epoch mod views), shuffled by `seed`."""
        import tensorflow as tf

        dim = self.train.shape[-1]
        view = self.train[epoch % self.views]

        def gather(indices):
            return np.asarray(view[indices])

        def lookup(indices, labels):
            features = tf.numpy_function(gather, [indices], tf.float32, stateful=True)
            features.set_shape([None, dim])
            return features, self.encode(labels)

        ds = tf.data.Dataset.from_tensor_slices((np.arange(len(self.train_labels)), self.train_labels))
        # The same shuffle, batches and repetition as the image pipeline's
        # (`to_batches`), so that training on features and end to end see
        # the same batches.
        ds = ds.shuffle(window, seed=seed, reshuffle_each_iteration=False).batch(batch_size).repeat()
        return finish(ds.map(lookup).prefetch(tf.data.AUTOTUNE))

    def val_dataset(self, batch_size: int):
        import tensorflow as tf

        if self.val is None:
            return None
        ds = tf.data.Dataset.from_tensor_slices((self.val, self.val_labels)).batch(batch_size)
        return finish(ds.map(lambda x, y: (x, self.encode(y))))


def stored_features(recipe, clf, train: list, val: list, infos: dict, backbone_version: int = 0) -> tuple:
    """The features `audit` stored for these images (`tltool.training.feature_store`), in their order: (train
    rows, val rows), each None unless every image's is stored; train only when the recipe does not augment,
    neither under mixed precision, nor once a phase has trained the backbone (`backbone_version` > 0: the
    stored rows are those of the backbone as built)."""
    from tltool.training.feature_store import known_rows, store_key

    if recipe.precision != "float32" or backbone_version:
        return None, None
    key = store_key(clf.spec, recipe.weights, recipe.image_size, recipe.data.aspect, recipe.head.pooling)
    train_rows = known_rows(key, [infos[s.path].sha1 for s in train]) if clf.augmenter is None else None
    return train_rows, known_rows(key, [infos[s.path].sha1 for s in val])


def compute_features(features_model, augmenter, train_images, val_images, n_train: int, n_val: int,
                     views: int, batch_size: int, encode, disk_dir: str | None, stored=(None, None)) -> FeatureCache:
    """Run the frozen backbone once over every image (and view).

    The backbone always runs in inference mode (training=False), whatever its
    layers' trainable flags, so BatchNorm statistics are used, never updated;
    only the augmentation runs in training mode. Features are written batch
    by batch into their store, so a store on disk never passes through RAM.

    Args:
        features_model: image -> pooled features, without augmentation.
        augmenter: the augmentation layers; None when the recipe has none.
        train_images / val_images: unbatched (uint8 image, label, index) from
            `labelled_images`, in pipeline order; val may be None.
        n_train / n_val: number of images in each (for sizing the stores).
        views: augmented views per training image; ignored (one plain view)
            without an augmenter.
        encode: batched targets -> what the loss takes (the task's `encode`).
        disk_dir: where a store too large for memory goes.
        stored: (train, val) features already known (`stored_features`), in
            the order of the images, read instead of computed; None for each
            that is not.
    """
    import tensorflow as tf

    augmented = augmenter is not None
    views = views if augmented else 1
    start = time.perf_counter()
    dim = features_model.output.shape[-1]
    store = _allocate((views, n_train, dim), disk_dir, "train")

    def embed(x):
        x = tf.cast(x, tf.float32)
        return features_model(augmenter(x, training=True) if augmented else x, training=False)

    def batches(images):
        return finish(images.batch(batch_size).prefetch(tf.data.AUTOTUNE))

    step = tf.function(embed)
    for v in range(views):
        labels = _fill(step, batches(train_images), store[v], stored[0])
    store = store[:, : len(labels)]
    val, val_labels = None, None
    if val_images is not None:
        val = _allocate((1, n_val, dim), disk_dir, "val")[0]
        plain = tf.function(lambda x: features_model(tf.cast(x, tf.float32), training=False))
        val_labels = _fill(plain, batches(val_images), val, stored[1])
        val = val[: len(val_labels)]
    seconds = time.perf_counter() - start
    where = f"on disk in {disk_dir}" if isinstance(store, np.memmap) else "in memory"
    size_mb = (store.nbytes + (val.nbytes if val is not None else 0)) / 2**20
    shown = f" x {views} augmented view{'s' if views > 1 else ''}" if augmented else ""
    read = [name for name, rows in zip(("train", "val"), stored) if rows is not None]
    reused = f"; {' and '.join(read)} read from the audit's embeddings" if read else ""
    say(f"cached {len(labels)} features of dim {dim}{shown} in {seconds:.1f} s ({size_mb:.1f} MB {where}){reused}")
    return FeatureCache(store, labels, val, val_labels, encode)


def _fill(step, batches, out: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Write step(images) (or the `known` rows of the batch's images) for every batch into `out`, in order;
    returns the labels."""
    from tltool.hooks import pause_point

    labels, at = [], 0
    for images, y, index in batches:
        features = known[np.asarray(index)] if known is not None else np.asarray(step(images), dtype=np.float32)
        out[at: at + len(features)] = features
        at += len(features)
        labels.append(np.asarray(y))
        pause_point("features")
    return np.concatenate(labels) if labels else np.zeros((0,), np.int32)


def _allocate(shape: tuple[int, ...], disk_dir: str | None, name: str) -> np.ndarray:
    size = int(np.prod(shape)) * 4
    if size <= memory_budget() or disk_dir is None:
        return np.zeros(shape, np.float32)
    os.makedirs(disk_dir, exist_ok=True)
    return np.lib.format.open_memmap(os.path.join(disk_dir, f"{name}.npy"), "w+", np.float32, shape)
