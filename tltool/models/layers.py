"""Custom Keras layers saved inside tltool models (import tltool before loading a .keras file)."""

import keras

EPSILON = 1e-30  # probabilities are clipped here before the log, in the model and in numpy alike


@keras.saving.register_keras_serializable(package="tltool")
class BackbonePreprocess(keras.layers.Layer):
    """Maps raw 0-255 RGB pixels to what a backbone expects.

    Calls ``keras.applications.<module>.preprocess_input``, so the exported
    model takes plain pixels and nobody has to remember the backbone's
    normalisation.

    Example:
        >>> layer = BackbonePreprocess("resnet")  # caffe: BGR, mean-subtracted
    """

    def __init__(self, module: str, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self._fn = getattr(keras.applications, module).preprocess_input

    def call(self, images):
        return self._fn(images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "module": self.module}


@keras.saving.register_keras_serializable(package="tltool")
class Temperature(keras.layers.Layer):
    """Probabilities -> softmax(log(p) / T): the calibration `tltool.training.calibration` fitted.

    T > 1 makes the model less sure of itself, T < 1 more; the predicted
    class never changes. Computed in float32 whatever the dtype policy.
    """

    def __init__(self, temperature: float, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.temperature = float(temperature)

    def call(self, probs):
        logits = keras.ops.log(keras.ops.maximum(keras.ops.cast(probs, "float32"), EPSILON))
        return keras.ops.softmax(logits / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}
