"""Building the classifier: image -> [augment] -> preprocess -> backbone -> pool -> head.

The head is kept thin (keras-hub's ImageClassifier): global pooling, dropout,
optional hidden dense layers, and a Dense layer named ``predictions`` with a
softmax (or the task's activation), kept in float32 under mixed precision. Augmentation layers are part
of the training graph only; the inference model shares every other layer and
is what gets saved and exported, taking raw 0-255 RGB pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from tltool.models.augment import build_augmenter
from tltool.models.backbone import Backbone
from tltool.recipe.schema import Augment, Head


@dataclass
class Classifier:
    """The parts of one classifier; all models share their layers.

    Attributes:
        model: training graph, with augmentation.
        inference: the same without augmentation: saved and exported.
        backbone: the pretrained feature extractor (`tltool.models.backbone.Backbone`).
        augmenter: the augmentation layers, or None.
        features: image -> pooled features, without augmentation.
        head: pooled features -> class probabilities.
    """

    model: keras.Model
    inference: keras.Model
    backbone: Backbone
    augmenter: keras.Sequential | None
    features: keras.Model
    head: keras.Model
    image_size: int

    @property
    def spec(self):
        return self.backbone.spec


def build_classifier(
    backbone: Backbone,
    num_classes: int,
    image_size: int,
    head: Head,
    augment: Augment,
    seed: int = 1337,
    activation: str = "softmax",
) -> Classifier:
    """The classifier's graphs around a built backbone.

    Args:
        activation: the output layer's, as the task says (softmax for one
            label per image).
    """
    image = keras.Input((image_size, image_size, 3), name="image")
    augmenter = build_augmenter(augment, seed)
    pool = backbone.pooling(head.pooling)
    head_layers = _head_layers(head, num_classes, activation)

    def top(pixels):
        return pool(backbone.forward(pixels))

    def classify(features):
        for layer in head_layers:
            features = layer(features)
        return features

    pooled = top(augmenter(image) if augmenter else image)
    plain = top(image)
    feature_input = keras.Input((pooled.shape[-1],), name="features")
    label = backbone.spec.label
    name = f"{label}_classifier"
    return Classifier(
        model=keras.Model(image, classify(pooled), name=f"{name}_train"),
        inference=keras.Model(image, classify(plain), name=name),
        backbone=backbone,
        augmenter=augmenter,
        features=keras.Model(image, plain, name=f"{label}_features"),
        head=keras.Model(feature_input, classify(feature_input), name=f"{label}_head"),
        image_size=image_size,
    )


def _head_layers(head: Head, num_classes: int, activation: str) -> list[keras.layers.Layer]:
    layers = []
    for i, units in enumerate(head.hidden_units, start=1):
        if head.dropout > 0:
            layers.append(keras.layers.Dropout(head.dropout, name=f"dropout_{i}"))
        layers.append(keras.layers.Dense(units, activation=head.activation, name=f"hidden_{i}"))
    if head.dropout > 0:
        layers.append(keras.layers.Dropout(head.dropout, name="dropout"))
    layers.append(keras.layers.Dense(num_classes, activation=activation, name="predictions", dtype="float32"))
    return layers


def forward_function(model: keras.Model, image_size: int):
    """`model(x, training=False)` as one graph for every batch size: float32 (N, S, S, 3) -> outputs.

    Traced once, however the batches vary (a last short batch would retrace
    a shape-specialised function), and shared by whatever runs the model
    in a process: calibration, evaluation and the SavedModel export.
    """
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])


def split_classifier(model):
    """(the layers before the nested backbone, the backbone, the layers after it) of a classifier built here (or
    loaded from a .keras file tltool wrote): how Grad-CAM and the audit's embeddings reach inside one.

    Raises:
        TltoolError: a model without the layers named ``backbone`` and ``predictions``.
    """
    from tltool.errors import TltoolError

    layers = model.layers[1:]  # the image input first
    names = [layer.name for layer in layers]
    if "backbone" not in names or "predictions" not in names:
        raise TltoolError(f"{model.name}: not a classifier tltool built (no layer named backbone and predictions); "
                          "explain a run directory or a .keras file that tltool wrote")
    at = names.index("backbone")
    return layers[:at], layers[at], layers[at + 1:]
