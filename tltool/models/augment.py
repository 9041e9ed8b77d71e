"""Augmentation for training: core Keras 3 preprocessing layers in the model, MixUp and CutMix in the pipeline."""

from __future__ import annotations

import keras

from tltool.recipe.schema import Augment


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
