"""Losses tltool trains with beyond Keras' own."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="tltool")
class PositiveWeightedCrossentropy(keras.losses.Loss):
    """Binary cross-entropy whose positive terms of class c weigh `weights[c]` (multi-label class weighting)."""

    def __init__(self, weights, label_smoothing: float = 0.0, name: str = "weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights, self.label_smoothing = [float(w) for w in weights], float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "float32")
        y_true = y_true * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        p = keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        weights = keras.ops.array(self.weights, "float32")
        terms = weights * y_true * keras.ops.log(p) + (1 - y_true) * keras.ops.log(1 - p)
        return -keras.ops.mean(terms, axis=-1)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights, "label_smoothing": self.label_smoothing}
