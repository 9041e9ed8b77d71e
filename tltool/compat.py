"""Every private TensorFlow/Keras API tltool uses, in one place, each guarded.

No other module imports ``keras.src``, ``tensorflow.python`` or
``tensorflow.lite.python``, or names a private TF/Keras attribute. Each entry
says what it does, why no public API does it, and the versions it was
checked against (`CHECKED`); `tests/test_compat.py` runs every entry, and an
entry whose private API is gone raises `CompatError` naming the entry and
the versions, instead of silently doing something else.

- `patch_symbolic_build`: `TensorFlowTrainer._maybe_symbolic_build` and
  `keras.src.tree` (keras-team/keras#20585, tensorflow/tensorflow#72388; below).
- `patch_multi_worker`: `trainer.reduce_per_replica` (keras-team/keras#20585; below).
- `RateFactors`: `Optimizer._var_key` and an override of
  `Optimizer._apply_weight_decay`, for a rate and a decay per variable; Keras
  has one rate per optimizer.
- `seed_generators`: a layer's attributes (`vars`); Keras lists no layer's
  SeedGenerators.
- `calibrate_only`: the converter's `_experimental_calibrate_only`, a
  calibrated flatbuffer not yet quantized, converted from the model's
  function frozen by `convert_variables_to_constants_v2` (`frozen_function`,
  which the ONNX export reads too: no SavedModel on the way, no constant
  turned into a graph input).
- `quantize_calibrated`: `tensorflow.lite.python.convert.mlir_quantize`, int8
  with some operators left in float (`denylisted_nodes`).
- `operator_outputs`: `Interpreter._get_ops_details`, a LiteRT file's operators.
- `outbound_layers`: `Layer._outbound_nodes`, which layer a convolution feeds.
- `watching_inputs`: replacing a layer instance's `call`, to see every
  convolution's inputs in one eager pass.
- `tf2onnx_numpy_shim`: `keras.src.export.tf2onnx_lib.patch_tf2onnx`, which
  Keras' ONNX export applies before tf2onnx; tltool calls tf2onnx itself.
- `siglip_token_count`: keras-hub's `SigLIPVisionEmbedding.compute_output_shape`
  (in ``keras_hub.src``) declares (side / patch)^2 + 1 tokens, as if SigLIP had a
  class token, and makes (side / patch)^2. The graph then carries a static
  shape one token too long, and training a SigLIP model now and then aborted
  inside TensorFlow; the fix declares what the layer makes (checked with
  keras-hub 0.32.0), and stands down where keras-hub declares it right.
- `random_state`: Keras' global seed attributes and TensorFlow's global seed,
  saved and put back so that `fit` leaves a caller's random state as it was;
  neither library has a getter for its global seed.

Work-arounds for Keras bugs under tf.distribute strategies (applied only while
a run trains under a strategy, `tltool.training.distribute`; `remove_patches`
puts the originals back):

1. `_maybe_symbolic_build` (keras-team/keras#20585, tensorflow/tensorflow#72388).
   Before training, Keras' TensorFlow trainer pulls a batch from the
   distributed iterator to build the model's metrics symbolically, and
   (a) under MultiWorkerMirroredStrategy fails, reducing that per-replica
   batch across workers ("Attempt to convert a value (PerReplica...)");
   (b) under every strategy consumes the batch: with `steps_per_epoch` the
   iterator is kept, so each `fit` call silently skips its first batch. The
   patch builds from the iterator's element spec instead, reading no data.
2. Scalar logs under MultiWorkerMirroredStrategy (keras-team/keras#20585):
   Keras averages each step's per-replica logs (loss, accuracy) across the
   workers with `strategy.reduce("MEAN", value, axis=0)`, and a scalar has
   no axis 0 ("Invalid reduction dimension 0 for input with 0
   dimensions"); the patch averages scalars with `axis=None`.

Delete an entry the day its public replacement exists; the tests say
whether it was the last use.
"""

from __future__ import annotations

import contextlib

import numpy as np

CHECKED = "TensorFlow 2.21.0, Keras 3.15.1"


class CompatError(RuntimeError):
    """A private TensorFlow/Keras API tltool relies on is gone or changed: a bug to fix in tltool.compat."""


def _require(owner, name: str, entry: str):
    """`owner.name`, or a CompatError that names the entry and the versions it was checked with."""
    if not hasattr(owner, name):
        import keras
        import tensorflow as tf

        raise CompatError(f"tltool.compat.{entry}: {getattr(owner, '__name__', type(owner).__name__)}.{name} is "
                          f"gone in TensorFlow {tf.__version__} / Keras {keras.__version__} (checked with "
                          f"{CHECKED}); tltool needs an update")
    return getattr(owner, name)


_applied: dict[str, tuple[object, str, object]] = {}  # patch -> (owner, attribute, original)


def _patch(key: str, owner, name: str, replacement) -> None:
    _applied[key] = (owner, name, getattr(owner, name))
    setattr(owner, name, replacement)


def remove_patches() -> None:
    """Put back every original that a `patch_*` replaced."""
    for owner, name, original in reversed(list(_applied.values())):
        setattr(owner, name, original)
    _applied.clear()


def patch_symbolic_build() -> None:
    """Patch 1: build the model from the iterator's element spec, consuming nothing."""
    if "symbolic_build" in _applied:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    _require(trainer.TensorFlowTrainer, "_maybe_symbolic_build", "patch_symbolic_build")

    def first(spec):
        if isinstance(spec, tf.TensorSpec):
            return spec
        components = getattr(spec, "_component_specs", None) or getattr(spec, "_value_specs", None)
        return components[0] if components else spec

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(first, it.element_spec)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    _patch("symbolic_build", trainer.TensorFlowTrainer, "_maybe_symbolic_build", _maybe_symbolic_build)


def patch_multi_worker() -> None:
    """Patches 1 and 2, for MultiWorkerMirroredStrategy."""
    patch_symbolic_build()
    if "scalar_reduce" in _applied:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    original = _require(trainer, "reduce_per_replica", "patch_multi_worker")

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = strategy.experimental_local_results(value)[0]
            if local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    _patch("scalar_reduce", trainer, "reduce_per_replica", reduce_per_replica)


# ---------------------------------------------------------------- ONNX


def siglip_token_count() -> None:
    """Make SigLIP's vision embedding declare the tokens it makes (see the module docstring); idempotent."""
    from keras_hub.src.models.siglip import siglip_layers

    cls = _require(siglip_layers, "SigLIPVisionEmbedding", "siglip_token_count")
    if getattr(cls, "_tltool_token_count", False):
        return
    original = cls.compute_output_shape
    probe = cls(hidden_dim=4, patch_size=4, image_size=8)  # 4 patches
    if original(probe, (None, 8, 8, 3))[1] != 5:  # keras-hub declares it right: nothing to fix
        cls._tltool_token_count = True
        return

    def compute_output_shape(self, input_shape):
        shape = list(original(self, input_shape))
        if shape[1] is not None:
            shape[1] -= 1
        return shape

    cls.compute_output_shape = compute_output_shape
    cls._tltool_token_count = True


def tf2onnx_numpy_shim() -> None:
    """Keras' own shim that lets tf2onnx 1.17 run under NumPy 2 (it calls `np.object` & co.)."""
    from keras.src.export import tf2onnx_lib

    _require(tf2onnx_lib, "patch_tf2onnx", "tf2onnx_numpy_shim")()


# ---------------------------------------------------------------- random state


@contextlib.contextmanager
def random_state():
    """Within the block, seed as you like; after it, Python's, NumPy's, Keras' and TensorFlow's global
    random state is as it was before."""
    import random

    import tensorflow as tf
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.framework import random_seed

    keys = [_require(rng_utils, "GLOBAL_RANDOM_SEED", "random_state"),
            _require(seed_generator, "GLOBAL_SEED_GENERATOR", "random_state")]
    python, numpy = random.getstate(), np.random.get_state()
    keras_state = {key: global_state.get_global_attribute(key) for key in keys}
    tf_seed = _require(random_seed, "get_seed", "random_state")(None)[0]
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        for key, value in keras_state.items():
            global_state.set_global_attribute(key, value)
        tf.random.set_seed(tf_seed)


# ---------------------------------------------------------------- optimizers


class RateFactors:
    """Per-variable learning-rate factors for a Keras optimizer (mix it in before the Keras class).

    Keras optimizers apply one rate to every variable. For Adam, AdamW,
    RMSprop and SGD the update of a variable is proportional to the rate it
    is given, so multiplying that rate per variable is exactly a separate
    optimizer per group (scaling gradients instead would change nothing
    under Adam). Decoupled weight decay is scaled the same way, as it is in
    fastai's discriminative rates: Keras applies it in the private
    `_apply_weight_decay`, overridden here.
    """

    def set_rate_factors(self, pairs) -> None:
        key = _require(self, "_var_key", "RateFactors")
        self._factors = {key(v): float(f) for v, f in pairs if float(f) != 1.0}

    def rate_factor(self, variable) -> float:
        return getattr(self, "_factors", {}).get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        factor = self.rate_factor(variable)
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or not getattr(self, "_factors", None):
            return super()._apply_weight_decay(variables)
        base = self.weight_decay
        by_factor: dict[float, list] = {}
        for variable in variables:
            by_factor.setdefault(self.rate_factor(variable), []).append(variable)
        try:
            for factor, group in by_factor.items():
                self.weight_decay = base * factor  # read while tracing: a constant per group
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = base


def check_rate_factors(optimizer_class) -> None:
    """The Keras optimizer still has the private methods `RateFactors` relies on."""
    for name in ("_var_key", "_apply_weight_decay"):
        _require(optimizer_class, name, "RateFactors")


# ---------------------------------------------------------------- random streams


def seed_generators(layers) -> list:
    """Every keras.random.SeedGenerator held by these layers and the layers inside them, in a fixed order."""
    import keras

    found = []
    for layer in layers:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and all(value is not f for f in found):
                _require(value, "state", "seed_generators")
                found.append(value)
        found += [g for g in seed_generators(getattr(layer, "layers", [])) if all(g is not f for f in found)]
    return found


# ---------------------------------------------------------------- converters (LiteRT int8, ONNX)


def frozen_function(model, signature: list):
    """`model(x, training=False)` as a concrete function with every weight and kept constant inlined.

    What converters should read: a SavedModel or a function with captures
    gives them inputs besides the image (a ViT's position ids), or makes
    them write and load a SavedModel first.
    """
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    forward = tf.function(lambda x: model(x, training=False), input_signature=signature)
    convert = _require(convert_to_constants, "convert_variables_to_constants_v2", "frozen_function")
    return convert(forward.get_concrete_function())


def calibrate_only(model, path: str, signature: list, representative) -> None:
    """Write a float flatbuffer that carries every tensor's calibrated range, not yet quantized.

    Converted from the model's frozen function, not through Keras' `export`: that writes a SavedModel and
    the converter loads it back, which took 8 of the 14 s a calibration of a MobileNetV2 costs.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_function(model, signature)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    _require(converter, "_experimental_calibrate_only", "calibrate_only")
    converter._experimental_calibrate_only = True
    with open(path, "wb") as f:
        f.write(converter.convert())


def quantize_calibrated(calibrated: bytes, io_dtype, keep_float: list[str]) -> bytes:
    """int8 from a calibrated flatbuffer, with the operators named in `keep_float` left in float.

    What the public `tf.lite.experimental.QuantizationDebugger` calls for
    its `denylisted_nodes`; the debugger itself runs the deprecated
    `tf.lite.Interpreter`.
    """
    from tensorflow.lite.python import convert

    quantize = _require(convert, "mlir_quantize", "quantize_calibrated")
    return quantize(calibrated, input_data_type=io_dtype, output_data_type=io_dtype,
                    denylisted_nodes=list(keep_float))


def operator_outputs(interpreter) -> list[str]:
    """The name of every operator's output tensor in a LiteRT interpreter: what `denylisted_nodes` takes."""
    details = _require(interpreter, "_get_ops_details", "operator_outputs")()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [names[op["outputs"][0]] for op in details]


def outbound_layers(layer) -> list:
    """The layers that take `layer`'s output in its functional model."""
    return [node.operation for node in _require(layer, "_outbound_nodes", "outbound_layers")]


@contextlib.contextmanager
def watching_inputs(layers, watch):
    """Within the block, `watch(layer, inputs)` sees every input of each layer's `call`: eager calls, and calls
    while a tf.function traces (`watch` then runs once per trace, on the symbolic inputs)."""
    def watching(layer):
        call = layer.call

        def watched(inputs, *args, **kwargs):
            watch(layer, inputs)
            return call(inputs, *args, **kwargs)

        return watched

    for layer in layers:
        layer.call = watching(layer)
    try:
        yield
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call
