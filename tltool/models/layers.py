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


@keras.saving.register_keras_serializable(package="tltool")
class ScaleOffset(keras.layers.Layer):
    """0-255 RGB -> pixels * scale + offset, per channel: a keras-hub preset's image converter, in the graph."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = [float(v) for v in scale], [float(v) for v in offset]

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        return images * keras.ops.array(self.scale, self.compute_dtype) + keras.ops.array(self.offset,
                                                                                          self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="tltool")
class TokenPooling(keras.layers.Layer):
    """A transformer's tokens (N, T, D) -> one vector per image.

    ``token``: the class token (the first); ``avg``: the mean of the patch
    tokens (those after the first `prefix`, the class and register tokens);
    ``token+avg``: both, concatenated (DINOv2's linear evaluation).
    """

    def __init__(self, kind: str = "token", prefix: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.prefix = kind, int(prefix)

    def call(self, tokens):
        parts = []
        if self.kind in ("token", "token+avg"):
            parts.append(tokens[:, 0])
        if self.kind in ("avg", "token+avg"):
            parts.append(keras.ops.mean(tokens[:, self.prefix:], axis=1))
        if self.kind == "max":
            parts.append(keras.ops.max(tokens[:, self.prefix:], axis=1))
        return parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        width = input_shape[-1] * (2 if self.kind == "token+avg" else 1)
        return (input_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "prefix": self.prefix}


@keras.saving.register_keras_serializable(package="tltool")
class ClassTemperature(keras.layers.Layer):
    """Independent per-class probabilities -> sigmoid(logit(p) / T_c): multi-label calibration, in float32.

    A temperature per class, as `tltool.evaluation.multilabel.fit_temperatures`
    fitted them; each class's ranking of images never changes.
    """

    def __init__(self, temperatures, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.temperatures = [float(t) for t in temperatures]

    def call(self, probs):
        p = keras.ops.clip(keras.ops.cast(probs, "float32"), 1e-7, 1 - 1e-7)
        logits = keras.ops.log(p) - keras.ops.log(1 - p)  # not log1p: ONNX has no such operator
        return keras.ops.sigmoid(logits / keras.ops.array(self.temperatures, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperatures": self.temperatures}
