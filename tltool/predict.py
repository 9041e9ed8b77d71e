"""Inference on image files: batched, with decoding overlapped with the model."""

from __future__ import annotations

import numpy as np


def predict_images(model, paths: list[str], image_size: int, aspect: str, batch_size: int = 32):
    """Probabilities for each decodable file in `paths`.

    Args:
        model: a callable on float32 (N, S, S, 3) pixel batches returning
            probabilities (a Keras model or a SavedModel endpoint).

    Returns:
        (probs, kept): probabilities, and the index into `paths` of each row.
    """
    import tensorflow as tf

    from tltool.data.pipeline import decode_dataset

    ds = decode_dataset(paths, image_size, aspect).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    forward = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False), reduce_retracing=True)
    probs, kept = [], []
    for images, index in ds:
        probs.append(np.asarray(forward(images)))
        kept.append(np.asarray(index))
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(probs), np.concatenate(kept)
