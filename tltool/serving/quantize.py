"""int8 LiteRT: post-training quantization, with the few layers it hurts most kept in float.

Rounding every weight and activation to 256 levels costs most backbones well
under a point of accuracy. Some lose far more, and the loss comes from a
handful of layers: the pretrained MobileNetV2 loses 6 points at 96 px and 47
at 224 px, most of it in its first depthwise convolution, whose BatchNorm
multiplies channels that were dead on ImageNet by up to 30, and the
convolution after it.

So the file is made in four steps:

1. Calibrate once: the converter records every tensor's value range on the
   calibration images (`--calibration-images`, from the training split).
2. Quantize everything and compare with the Keras model on those images. If
   the top-1 agrees on at least `AGREEMENT` of them, that file is the export.
3. Otherwise measure each layer's own damage (only that layer in int8, the
   rest in float: total variation distance from the Keras model's
   probabilities on `PROBE_IMAGES` images; see `_ranked`), and keep the
   most damaging layers in float one by one, until the agreement is reached
   or `MAX_FLOAT_LAYERS` were tried; a layer that would grow the file by more
   than `SIZE_ALLOWANCE` (or 64 KiB, for tiny models) is passed over. Of the
   sets tried, the one whose probabilities come closest to the Keras
   model's wins.
4. Calibrate again with the convolutions that stay int8 bias-corrected
   (`_bias_corrected`), and keep whichever of the two files comes closer
   to the Keras model. (Correcting first would be wrong for the layers
   then kept in float: the correction is for rounding they never get.)

Float layers run on CPUs and GPUs through LiteRT's built-in kernels, with a
dequantize and quantize around them. Integer-only accelerators (Edge TPU,
some NPUs, microcontrollers) cannot run them: `float_layers="none"` gives a
file with no float layer.

Quantizing with some layers held back, calibrating without quantizing and
listing a file's operators use private TensorFlow APIs, all in
`tltool.compat`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

from tltool.console import native_output_hidden, say
from tltool.serving.runtimes import litert_forward, run_batches

AGREEMENT = 0.99
PROBE_IMAGES = 20
MEASURED_LAYERS = 100
WORST_RUNS = 4
MAX_FLOAT_LAYERS = 16
SIZE_ALLOWANCE = 0.10
FLOAT_LAYERS = ("auto", "none")


@dataclass
class Int8Model:
    """A quantized flatbuffer, and what the float fallback did."""

    flatbuffer: bytes
    agreement: float  # top-1 agreement with the Keras model on the calibration images
    full_integer_agreement: float
    float_layers: list[str] = field(default_factory=list)


def int8_model(model, signature: list, pixels: np.ndarray, representative, int8_io: str = "float",
               float_layers: str = "auto", agreement: float = AGREEMENT) -> Int8Model:
    """Quantize `model` to int8, keeping layers in float as the module docstring says.

    Args:
        model: the Keras model.
        signature: its input signature, as for `Model.export`.
        pixels: calibration images already fitted to the input (float32
            (N, S, S, 3), 0-255), to compare the quantized file with the model.
        representative: yields the calibration batches for the converter.
        int8_io: float or uint8 input and output.
        float_layers: auto (the fallback above) or none (full integer).
        agreement: the share of top-1 predictions that must agree with the
            Keras model before no more layers are kept in float.
    """
    reference = run_batches(lambda batch: model(batch, training=False), pixels)
    calibrated = _calibrated(model, signature, representative)
    quantize = _quantizer(calibrated)
    full_probs = _run(quantize([]), pixels)
    full = _agrees(full_probs, reference)
    chosen = []
    if float_layers == "auto" and full < agreement:
        say(f"int8: full integer agrees with the Keras model on {100 * full:.1f}% of the calibration images; "
            f"finding the layers to keep in float")
        chosen = _fallback(quantize, _layer_names(calibrated), pixels, reference, full_probs, agreement)
    with _bias_corrected(model, pixels, keep_float=chosen):
        corrected = _quantizer(_calibrated(model, signature, representative))
    plain = _run(quantize(chosen), pixels) if chosen else full_probs
    better = _run(corrected(chosen), pixels)
    if _distance(better, reference) < _distance(plain, reference):
        plain, quantize = better, corrected
    return Int8Model(quantize(chosen, int8_io), _agrees(plain, reference), full, [_short(name) for name in chosen])


@contextlib.contextmanager
def _bias_corrected(model, pixels: np.ndarray, keep_float: list[str] = ()):
    """Within the block, each convolution's output no longer moves, on average, when int8 rounds its kernel.

    Rounding a kernel to 255 levels per output channel shifts that
    channel's mean output by sum(rounding error x mean input); the error
    compounds through a deep network (weights rounded alone cost the
    pretrained MobileNetV2 at 224 px 43 points). Moving the BatchNorm's mean
    after the convolution (or else its bias) by that shift takes it out
    ("bias correction", Nagel et al. 2019, "Data-Free Quantization"); with
    it, rounded weights cost 1 point. The mean inputs come from the
    calibration images; the model is restored on leaving the block.
    Convolutions inside the operators `keep_float` names stay as they are.
    """
    import keras

    from tltool.compat import outbound_layers
    from tltool.models.freeze import every_layer

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    convolutions = [layer for layer in every_layer(model) if isinstance(layer, kinds)
                    and layer.data_format == "channels_last" and getattr(layer, "groups", 1) == 1
                    and not any(_names(layer.name, operator) for operator in keep_float)]
    means = _input_means(model, convolutions, pixels)
    saved = []
    try:
        for layer in convolutions:
            shift = _rounding_shift(layer, means[id(layer)])
            after = outbound_layers(layer)
            if len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization):
                variable = after[0].moving_mean
            elif layer.use_bias:
                variable, shift = layer.bias, -shift
            else:
                continue
            saved.append((variable, variable.numpy()))
            variable.assign(variable.numpy() + shift)
        yield model
    finally:
        for variable, value in saved:
            variable.assign(value)


def _names(layer: str, operator: str) -> bool:
    """Whether a LiteRT operator's fused name (`model_1/backbone_1/block_1_expand_1/convolution;...`) has the layer."""
    return any(part in (layer, layer + "_1") for part in re.split("[/;]", operator))


def _input_means(model, layers: list, pixels: np.ndarray, batch: int = 32) -> dict[int, np.ndarray]:
    """Each layer's mean input per channel over `pixels`, seen in one eager pass."""
    from tltool.compat import watching_inputs

    totals = {id(layer): [0.0, 0] for layer in layers}

    def watch(layer, inputs):
        values = np.asarray(inputs)
        totals[id(layer)][0] += values.sum(axis=(0, 1, 2))
        totals[id(layer)][1] += values.size // values.shape[-1]

    with watching_inputs(layers, watch):
        for start in range(0, len(pixels), batch):
            model(pixels[start:start + batch], training=False)
    return {key: total / count for key, (total, count) in totals.items()}


def _rounding_shift(layer, mean_input: np.ndarray) -> np.ndarray:
    """How much int8 per-channel rounding of the kernel moves each output channel's mean."""
    import keras

    kernel = np.asarray(layer.kernel)
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (h, w, in, multiplier), one scale per (in, multiplier)
        error = _rounded(kernel, axes=(0, 1)) - kernel
        return (error.sum(axis=(0, 1)) * mean_input[:, None]).reshape(-1)
    error = _rounded(kernel, axes=(0, 1, 2)) - kernel  # (h, w, in, out), one scale per out
    return np.einsum("hwio,i->o", error, mean_input)


def _rounded(kernel: np.ndarray, axes: tuple) -> np.ndarray:
    """The kernel as LiteRT stores it: symmetric int8 (-127..127), one scale per output channel."""
    scale = np.abs(kernel).max(axis=axes, keepdims=True) / 127
    scale[scale == 0] = 1
    return np.round(kernel / scale) * scale


def _calibrated(model, signature: list, representative) -> bytes:
    """A float flatbuffer that carries every tensor's calibrated range, not yet quantized."""
    from tltool.compat import calibrate_only

    with tempfile.TemporaryDirectory() as folder, native_output_hidden():
        path = os.path.join(folder, "calibrated.tflite")
        calibrate_only(model, path, signature, representative)
        with open(path, "rb") as f:
            return f.read()


def _quantizer(calibrated: bytes):
    import tensorflow as tf

    from tltool.compat import quantize_calibrated

    def quantize(keep_float: list[str], io: str = "float") -> bytes | None:
        """The int8 flatbuffer with `keep_float` layers in float; None where the quantizer cannot mix them
        (it refuses a concatenation of float and int8 inputs, as in DINOv3's embeddings)."""
        with native_output_hidden():
            try:
                return quantize_calibrated(calibrated, tf.uint8 if io == "uint8" else tf.float32, keep_float)
            except RuntimeError:
                if not keep_float:
                    raise
                return None

    return quantize


def _fallback(quantize, layers: list[str], pixels, reference, full_probs, agreement: float) -> list[str]:
    """Keep the ranked layers in float one by one; the set whose probabilities come closest to Keras wins."""
    ranked = _ranked(quantize, layers, pixels[:PROBE_IMAGES], reference[:PROBE_IMAGES])
    full = len(quantize([]))
    budget = full + max(SIZE_ALLOWANCE * full, 64 * 1024)
    chosen, best, closest = [], [], _distance(full_probs, reference)
    with _bar(len(ranked), "int8: trying layers in float") as bar:
        for name in ranked:
            bar.update()
            flatbuffer = quantize([*chosen, name])
            if flatbuffer is None or len(flatbuffer) > budget:
                continue
            chosen.append(name)
            probs = _run(flatbuffer, pixels)
            distance = _distance(probs, reference)
            if distance < closest:
                best, closest = list(chosen), distance
            if _agrees(probs, reference) >= agreement:
                break
    return best


def _ranked(quantize, layers: list[str], probe, probe_reference) -> list[str]:
    """The `MAX_FLOAT_LAYERS` layers that do the most damage alone in int8, most first.

    Each measurement costs a quantization and a run (2.4 s a layer for
    EfficientNetB0 at 224 px, which has 303), so a model with more than
    `MEASURED_LAYERS` layers has runs of consecutive layers measured first,
    then the layers of the `WORST_RUNS` worst runs.
    """
    measured, runs = layers, []
    if len(layers) > MEASURED_LAYERS:
        length = round(len(layers) ** 0.5)
        runs = [layers[i:i + length] for i in range(0, len(layers), length)]
    with _bar(len(runs) + (WORST_RUNS * len(runs[0]) if runs else len(layers)),
              "int8: measuring each layer's damage") as bar:
        def damage(names):
            alone = quantize([other for other in layers if other not in names])
            bar.update()
            return -1.0 if alone is None else _distance(_run(alone, probe), probe_reference)

        if runs:
            worst = sorted(runs, key=lambda run: damage(set(run)), reverse=True)[:WORST_RUNS]
            measured = [name for run in worst for name in run]
            bar.total = len(runs) + len(measured)
        scores = {name: damage({name}) for name in measured}
    return sorted(scores, key=scores.get, reverse=True)[:MAX_FLOAT_LAYERS]


def _bar(total: int, description: str):
    """A progress bar on a terminal (stderr), nothing elsewhere; it goes when done."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="layer", leave=False, disable=None)


def _layer_names(flatbuffer: bytes) -> list[str]:
    """The name of every operator's output tensor: what `denylisted_nodes` takes."""
    from tltool.compat import operator_outputs

    return operator_outputs(_interpreter(flatbuffer))


def _short(name: str) -> str:
    """`model_1/backbone_1/block_1_expand_relu_1/Relu6;...` -> `backbone/block_1_expand_relu/Relu6`."""
    parts = name.split(";")[0].split("/")
    return "/".join(part[:-2] if part.endswith("_1") else part for part in parts[1:] or parts)


def _agrees(probs, reference) -> float:
    """The share of images whose top-1 class is the same."""
    return float((probs.argmax(1) == reference.argmax(1)).mean())


def _distance(probs, reference) -> float:
    """Mean total variation distance between two sets of probability vectors."""
    return float(0.5 * np.abs(probs - reference).sum(1).mean())


def _run(flatbuffer: bytes, pixels: np.ndarray) -> np.ndarray:
    return run_batches(litert_forward(_interpreter(flatbuffer)), pixels)


def _interpreter(flatbuffer: bytes):
    from ai_edge_litert.interpreter import Interpreter

    with native_output_hidden():
        return Interpreter(model_content=flatbuffer)
