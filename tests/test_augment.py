"""Augmentation: nothing that changes an image's meaning by default; the strong policies of core Keras on request."""

import numpy as np
import pytest

from conftest import run_cli


def test_the_default_never_flips():
    from tltool.recipe import load_recipe, recipe_from_dict
    from tltool.recipe.schema import Augment

    assert Augment().flip == "none"
    assert load_recipe().augment.flip == "none"
    assert recipe_from_dict({"phases": [{"name": "a", "epochs": 1}]}).augment.flip == "none"


def test_strong_policies_are_core_keras_layers():
    from tltool.models.augment import build_augmenter
    from tltool.recipe.schema import Augment

    augmenter = build_augmenter(Augment(color_jitter=0.2, rand_augment=2, aug_mix=0.3, random_erasing=0.25), 1)
    names = [type(layer).__name__ for layer in augmenter.layers]
    assert names == ["RandomColorJitter", "RandAugment", "AugMix", "RandomErasing"]
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = np.asarray(augmenter(images, training=True))
    assert out.shape == images.shape and not np.allclose(out, images)
    np.testing.assert_array_equal(np.asarray(augmenter(images, training=False)), images)


@pytest.mark.parametrize("key", ["mixup", "cutmix"])
def test_mixing_changes_labels_in_the_pipeline(key):
    import tensorflow as tf

    from tltool.data.pipeline import to_batches
    from tltool.models.augment import build_mixer
    from tltool.recipe.schema import Augment

    images = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(6)])
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 3, np.arange(6)))
    mixer = build_mixer(Augment(**{key: 1.0}), seed=3)
    (x, y), = list(to_batches(data, lambda y: tf.one_hot(y, 3), batch_size=6, mixer=mixer).take(1))
    y = y.numpy()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    assert ((y > 0) & (y < 1)).any()  # soft labels: pairs were mixed
    assert build_mixer(Augment(), seed=3) is None


@pytest.mark.slow
def test_a_frozen_phase_with_mixup_trains_end_to_end(tiny_data, backbone_file, tmp_path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text("name: mix\naugment: {mixup: 0.4}\nphases:\n  - {name: head, epochs: 1, trainable: none}\n"
                      "early_stopping: null\n")
    result = run_cli("fit", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--batch-size", 6, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "1 epoch(s) end to end" in result.output and "features of dim" not in result.output
