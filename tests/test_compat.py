"""Every private TensorFlow/Keras API tltool relies on, run on real objects: an upgrade that breaks one fails here."""

import numpy as np
import pytest


def test_a_missing_private_api_is_a_loud_error_naming_the_entry_and_the_versions():
    from tltool.compat import CHECKED, CompatError, _require

    with pytest.raises(CompatError, match=r"tltool.compat.some_entry: .*nothing_here is gone in TensorFlow .*"
                                          + CHECKED.split(",")[0]):
        _require(object(), "nothing_here", "some_entry")


def test_the_distribution_patches_find_what_they_replace_and_are_removed_again():
    from keras.src.backend.tensorflow import trainer

    from tltool.compat import patch_multi_worker, remove_patches

    originals = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    patch_multi_worker()
    patched = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    assert all(callable(f) for f in patched) and not any(a is b for a, b in zip(patched, originals))
    remove_patches()
    assert (trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica) == originals


def test_random_state_gives_the_caller_its_seeds_back():
    import random

    import keras
    import tensorflow as tf
    from keras.src.utils.rng_utils import get_random_seed

    from tltool.compat import random_state

    keras.utils.set_random_seed(7)
    expected = (random.random(), np.random.random_sample())
    keras.utils.set_random_seed(7)
    with random_state():
        keras.utils.set_random_seed(99)
        tf.random.set_seed(None)
        random.random()
    assert (random.random(), np.random.random_sample()) == expected and get_random_seed() == 7


def test_rate_factors_scale_one_variables_update_and_find_the_private_methods():
    import keras

    from tltool.compat import check_rate_factors
    from tltool.training.optim import Adam

    for optimizer in (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.SGD, keras.optimizers.RMSprop):
        check_rate_factors(optimizer)
    slow, fast = keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(2, "float32"))
    optimizer = Adam(0.1)
    optimizer.set_rate_factors([(slow, 0.5)])
    optimizer.apply([keras.ops.ones(2), keras.ops.ones(2)], [slow, fast])
    np.testing.assert_allclose(np.asarray(slow), np.asarray(fast) * 0.5, rtol=1e-5)


def test_seed_generators_are_found_inside_nested_layers():
    import keras

    from tltool.compat import seed_generators

    flip = keras.layers.RandomFlip(seed=1)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.Sequential([flip]), keras.layers.Dropout(0.5, seed=2)])
    found = seed_generators([model])
    assert len(found) == 2 and all(isinstance(g, keras.random.SeedGenerator) for g in found)


def _conv_model():
    import keras

    image = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    bn = keras.layers.BatchNormalization(name="bn")
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(bn(conv(image))))
    return keras.Model(image, out), conv, bn


def test_outbound_layers_and_watching_inputs():
    from tltool.compat import outbound_layers, watching_inputs

    model, conv, bn = _conv_model()
    assert outbound_layers(conv) == [bn]
    seen = []
    with watching_inputs([conv], lambda layer, inputs: seen.append(np.asarray(inputs).shape)):
        model(np.zeros((2, 8, 8, 3), "float32"))
    assert seen == [(2, 8, 8, 3)]
    assert "call" not in vars(conv)  # the layer's own call is back
    model(np.zeros((1, 8, 8, 3), "float32"))
    assert len(seen) == 1


def test_litert_calibration_quantization_and_operator_names(tmp_path):
    import tensorflow as tf

    from tltool.compat import calibrate_only, operator_outputs, quantize_calibrated
    from tltool.serving.quantize import _interpreter

    model, _, _ = _conv_model()
    pixels = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "calibrated.tflite")
    calibrate_only(model, path, [tf.TensorSpec([None, 8, 8, 3], tf.float32)], lambda: ([p[None]] for p in pixels))
    calibrated = open(path, "rb").read()
    names = operator_outputs(_interpreter(calibrated))
    assert names and all(isinstance(n, str) for n in names)
    full = quantize_calibrated(calibrated, tf.float32, [])
    some_float = quantize_calibrated(calibrated, tf.float32, names[:1])
    assert full and some_float and full != some_float


def test_the_frozen_function_has_only_the_image_as_input_and_the_tf2onnx_shim_applies():
    import keras
    import tensorflow as tf

    from tltool.compat import frozen_function, tf2onnx_numpy_shim

    # An adapted Normalization keeps its mean and variance as tensors, not variables: they must be inlined
    # as constants, not become inputs of the function (which tf2onnx would make inputs of the ONNX graph).
    normalization = keras.layers.Normalization()
    normalization.adapt(np.arange(12, dtype="float32").reshape(3, 4))
    model = keras.Sequential([keras.Input((4,)), normalization, keras.layers.Dense(2)])
    frozen = frozen_function(model, [tf.TensorSpec([None, 4], tf.float32)])
    assert len(frozen.inputs) == 1 and not frozen.graph.variables
    x = np.ones((3, 4), "float32")
    np.testing.assert_allclose(frozen(tf.constant(x))[0].numpy(), np.asarray(model(x)), atol=1e-6)
    tf2onnx_numpy_shim()


def test_siglip_declares_the_tokens_it_makes():
    pytest.importorskip("keras_hub", reason="keras-hub needs Python >= 3.11")
    import numpy as np

    from tltool.models.hub import require_keras_hub

    keras_hub = require_keras_hub()
    encoder = keras_hub.models.SigLIPVisionEncoder(patch_size=8, hidden_dim=8, num_layers=1, num_heads=2,
                                                   intermediate_dim=16, image_shape=(32, 32, 3))
    tokens = encoder.post_layer_norm.output  # the graph's static shape
    made = encoder.get_layer(encoder.embedding.name)(np.zeros((1, 32, 32, 3), "float32"))
    assert tuple(tokens.shape) == (None, 16, 8) and tuple(made.shape) == (1, 16, 8)
