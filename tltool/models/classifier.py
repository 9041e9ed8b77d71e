"""Building the classifier: image -> [augment] -> preprocess -> backbone -> pool -> head.

The head is kept thin (keras-hub's ImageClassifier): global pooling, dropout,
optional hidden dense layers, and a Dense layer named ``predictions`` with a
softmax, kept in float32 under mixed precision. Augmentation layers are part
of the training graph only; the inference model shares every other layer and
is what gets saved and exported, taking raw 0-255 RGB pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from tltool.models.applications import BackboneSpec
from tltool.models.layers import BackbonePreprocess
from tltool.recipe.schema import Augment, Head


@dataclass
class Classifier:
    """The parts of one classifier; all models share their layers.

    Attributes:
        model: training graph, with augmentation.
        inference: the same without augmentation: saved and exported.
        backbone: the pretrained feature extractor.
        augmenter: the augmentation layers, or None.
        features: image -> pooled features, without augmentation.
        head: pooled features -> class probabilities.
    """

    model: keras.Model
    inference: keras.Model
    backbone: keras.Model
    augmenter: keras.Sequential | None
    features: keras.Model
    head: keras.Model
    spec: BackboneSpec
    image_size: int


def build_classifier(
    spec: BackboneSpec,
    backbone: keras.Model,
    num_classes: int,
    image_size: int,
    head: Head,
    augment: Augment,
    seed: int = 1337,
) -> Classifier:
    image = keras.Input((image_size, image_size, 3), name="image")
    augmenter = build_augmenter(augment, seed)
    preprocess = BackbonePreprocess(spec.preprocess_module, name="preprocess")
    pool = keras.layers.GlobalAveragePooling2D(name="pool") if head.pooling == "avg" else \
        keras.layers.GlobalMaxPooling2D(name="pool")
    head_layers = _head_layers(head, num_classes)

    def top(pixels):
        return pool(backbone(preprocess(pixels)))

    def classify(features):
        for layer in head_layers:
            features = layer(features)
        return features

    pooled = top(augmenter(image) if augmenter else image)
    plain = top(image)
    feature_input = keras.Input((pooled.shape[-1],), name="features")
    name = f"{spec.name}_classifier"
    return Classifier(
        model=keras.Model(image, classify(pooled), name=f"{name}_train"),
        inference=keras.Model(image, classify(plain), name=name),
        backbone=backbone,
        augmenter=augmenter,
        features=keras.Model(image, plain, name=f"{spec.name}_features"),
        head=keras.Model(feature_input, classify(feature_input), name=f"{spec.name}_head"),
        spec=spec,
        image_size=image_size,
    )


def _head_layers(head: Head, num_classes: int) -> list[keras.layers.Layer]:
    layers = []
    for i, units in enumerate(head.hidden_units, start=1):
        if head.dropout > 0:
            layers.append(keras.layers.Dropout(head.dropout, name=f"dropout_{i}"))
        layers.append(keras.layers.Dense(units, activation=head.activation, name=f"hidden_{i}"))
    if head.dropout > 0:
        layers.append(keras.layers.Dropout(head.dropout, name="dropout"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32"))
    return layers


def build_augmenter(augment: Augment, seed: int) -> keras.Sequential | None:
    """Keras core preprocessing layers for the recipe's augment section, or None."""
    layers = []
    if augment.flip != "none":
        mode = {"both": "horizontal_and_vertical"}.get(augment.flip, augment.flip)
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, fill_mode="reflect", seed=seed + 1))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom((-augment.zoom, augment.zoom), fill_mode="reflect", seed=seed + 2))
    if augment.translate:
        layers.append(keras.layers.RandomTranslation(augment.translate, augment.translate,
                                                     fill_mode="reflect", seed=seed + 3))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, seed=seed + 4))
    if augment.brightness:
        layers.append(keras.layers.RandomBrightness(augment.brightness, value_range=(0, 255), seed=seed + 5))
    if augment.color_jitter:
        j = augment.color_jitter
        layers.append(keras.layers.RandomColorJitter((0, 255), brightness_factor=j, contrast_factor=j,
                                                     saturation_factor=(max(0.0, 0.5 - j / 2), 0.5 + j / 2),
                                                     hue_factor=j / 4, seed=seed + 6))
    if augment.rand_augment:
        layers.append(keras.layers.RandAugment((0, 255), num_ops=augment.rand_augment,
                                               factor=augment.rand_augment_magnitude, seed=seed + 7))
    if augment.aug_mix:
        layers.append(keras.layers.AugMix((0, 255), factor=augment.aug_mix, seed=seed + 8))
    if augment.random_erasing:
        layers.append(keras.layers.RandomErasing(augment.random_erasing, value_range=(0, 255), seed=seed + 9))
    return keras.Sequential(layers, name="augment") if layers else None


def build_mixer(augment: Augment, seed: int):
    """MixUp and/or CutMix for the input pipeline: (images, one-hot labels) -> mixed, or None.

    They mix labels as well as images, so they cannot live in the model
    (which sees only images); they run on training batches in tf.data.
    """
    layers = []
    if augment.mixup:
        layers.append(keras.layers.MixUp(alpha=augment.mixup, seed=seed + 10))
    if augment.cutmix:
        layers.append(keras.layers.CutMix(factor=augment.cutmix, seed=seed + 11))
    if not layers:
        return None

    def mix(images, labels):
        data = {"images": images, "labels": labels}
        for layer in layers:
            data = layer(data, training=True)
        return data["images"], data["labels"]

    return mix
