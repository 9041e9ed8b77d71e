"""Exporting a trained classifier to the formats it will run in, each checked as it is written.

| format        | file (in RUN/export/)      | input (tier of `tltool.data.contract`)                | runtime            |
| ------------- | -------------------------- | ------------------------------------------------ | ------------------ |
| `savedmodel`  | `saved_model/`             | (a) bytes, (b) pixels of any size                 | TensorFlow Serving |
| `keras`       | `model.keras`              | (c) float32 (N, S, S, 3), 0-255                   | Keras              |
| `onnx`        | `model.onnx`               | (c) float32 (N, S, S, 3), 0-255                   | ONNX Runtime       |
| `litert`      | `model.tflite`             | (c) float32 (N, S, S, 3), 0-255                   | LiteRT             |
| `litert-fp16` | `model_fp16.tflite`        | (c) float32 (N, S, S, 3), 0-255; fp16 weights     | LiteRT             |
| `litert-int8` | `model_int8.tflite`        | (c) float32 or uint8 (N, S, S, 3), 0-255; int8    | LiteRT             |

(`tflite` is another name for `litert`.) The SavedModel decodes and resizes
images itself; the other files take pixels already decoded and fitted to
S x S as training did (`tltool.data.contract.prepare_file`). Every file carries
what it takes to use it without the run directory: class names, image size,
aspect policy and the input contract's version, in `assets/tltool.json`
(SavedModel), ONNX `metadata_props` (key `tltool`), or a sidecar
`<file>.json` (.keras, .tflite). LiteRT files use built-in operators only,
so they run in the standalone `ai-edge-litert` interpreter without
TensorFlow. `litert-int8` keeps the few layers that int8 would ruin in
float, unless told to make a full-integer file (`tltool.serving.quantize`).

Right after writing, each file is run in its own runtime on the run's
validation (or test) images and compared with the Keras model:
`export_report.json` and one terminal line give the size, the agreement
(share of identical top-1, largest probability difference), the accuracy and
its change, and the latency per image at batch 1 and 32. A format that loses
more accuracy than allowed fails with exit code 4; its file is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import numpy as np

from tltool.console import native_output_hidden
from tltool.errors import TltoolError
from tltool.files import atomic_path, write_json
from tltool.runs.run import classes_json

FORMATS = {"savedmodel": "saved_model", "keras": "model.keras", "onnx": "model.onnx", "litert": "model.tflite",
           "litert-fp16": "model_fp16.tflite", "litert-int8": "model_int8.tflite"}
ALIASES = {"tflite": "litert"}

EXTRA = "pip install 'tltool[export]'"
COMPARED_IMAGES = 200


def format_of(path: str, kind: str) -> str:
    """The export format a file or folder holds, from the name `tltool export` gives it, else its kind."""
    names = {name: fmt for fmt, name in FORMATS.items()}
    return names.get(os.path.basename(os.path.normpath(path)), kind)


def model_info(classes: list[str], image_size: int, aspect: str, backbone: str, task) -> dict:
    """What every exported file carries: classes, input size and policy, the contract's version, the task."""
    from tltool.data.contract import VERSION

    return {"classes": classes, "image_size": image_size, "aspect": aspect, "backbone": backbone,
            "input_contract": VERSION, **task.metadata()}


# ---------------------------------------------------------------- SavedModel and .keras


def export_saved_model(model, path: str, info: dict, task, forward=None, gradcam=None) -> str:
    """Write `model` (the inference model) as a SavedModel at `path`, atomically.

    Signatures: ``serving_default``/``serve`` (float32 pixels 0-255, any
    size), ``serve_uint8`` (the same as uint8) and ``serve_bytes`` (encoded
    images, (N,) strings), each preparing its input with `tltool.data.contract`
    and returning what the task says (`Task.serving_outputs`; single-label:
    ``probabilities``, ``class_id``, ``class_name`` and ``score``). ``assets/classes.json`` and ``assets/tltool.json`` go beside.

    A plain tf.Module rather than Keras' ExportArchive: the model is traced
    once and the signatures call that one graph, which halves the time of
    the export (the last step of every `fit`). `forward`, the model's
    `forward_function` when the caller has one traced already, saves tracing it again.

    ``gradcam``, where the caller gives Grad-CAM's traced function
    (`tltool.evaluation.gradcam.GradCam.function`): float32 (N, S, S, 3)
    ``images`` 0-255, already fitted to S x S, and int32 (N,) ``classes``
    (-1: the predicted one) -> ``heatmaps`` (N, h, w) in 0-1 and ``probabilities``.
    """
    import tensorflow as tf

    from tltool.data import contract

    size, aspect = info["image_size"], info["aspect"]
    names = tf.constant(info["classes"])
    if forward is None:
        from tltool.models.classifier import forward_function

        forward = forward_function(model, size)

    def outputs(inputs):
        return task.serving_outputs(forward(tf.cast(inputs, tf.float32)), names)

    def from_pixels(images):
        return outputs(contract.fit_to_square(contract.pixels_to_uint8(images), size, aspect))

    def from_bytes(data):
        return outputs(tf.map_fn(lambda d: contract.prepare_bytes(d, size, aspect), data,
                                 fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8)))

    served = tf.Module()
    served.model_variables = [getattr(v, "value", v) for v in model.variables]
    # Explicit control flow throughout: AutoGraph's conversion would only slow every export.
    def signature(fn, dtype, shape, name):
        return tf.function(fn, autograph=False, input_signature=[tf.TensorSpec(shape, dtype, name=name)])

    served.serve = signature(from_pixels, tf.float32, [None, None, None, 3], "images")
    served.serve_uint8 = signature(from_pixels, tf.uint8, [None, None, None, 3], "images")
    served.serve_bytes = signature(from_bytes, tf.string, [None], "image_bytes")
    signatures = {"serving_default": served.serve, "serve": served.serve, "serve_uint8": served.serve_uint8,
                  "serve_bytes": served.serve_bytes}
    if gradcam is not None:
        served.gradcam = tf.function(lambda images, classes: dict(zip(("heatmaps", "probabilities"),
                                                                      gradcam(images, classes))),
                                     autograph=False, input_signature=[
                                         tf.TensorSpec([None, size, size, 3], tf.float32, name="images"),
                                         tf.TensorSpec([None], tf.int32, name="classes")])
        signatures["gradcam"] = served.gradcam
    with atomic_path(path) as tmp:
        tf.saved_model.save(served, tmp, signatures=signatures)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        write_json(os.path.join(assets, "classes.json"), classes_json(info["classes"]))
        write_json(os.path.join(assets, "tltool.json"), info)
    return path


def save_keras(model, path: str) -> str:
    from tltool.hooks import pause_point

    with atomic_path(path) as tmp:
        model.save(tmp)
        pause_point("export")
    return path


def read_info(folder: str) -> dict | None:
    """tltool.json from a SavedModel's assets, if there is one."""
    path = os.path.join(folder, "assets", "tltool.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------- ONNX and LiteRT


def tier_c(info: dict) -> dict:
    size = info["image_size"]
    return {**info, "input": {"shape": [None, size, size, 3], "dtype": "float32", "range": [0, 255],
                              "layout": "RGB, decoded and fitted to S x S as tltool.data.contract.prepare_file does"},
            "output": "probabilities (N, classes)"}


def export_onnx(model, path: str, info: dict) -> str:
    """ONNX (tf2onnx, from the model's frozen function) with the model info in `metadata_props`.

    tf2onnx reads the frozen graph rather than Keras' export archive, which
    turns tensors a layer keeps (a ViT's position ids, EfficientNet's adapted
    Normalization mean and variance) into graph inputs.
    The graph's input is named ``image`` and its output ``probabilities``.
    """
    import warnings

    import onnx
    import tf2onnx

    from tltool.compat import frozen_function, tf2onnx_numpy_shim

    frozen = frozen_function(model, signature(info))
    with atomic_path(path) as tmp, native_output_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)  # inside tf2onnx
        tf2onnx_numpy_shim()
        proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(),
                                                  input_names=[t.name for t in frozen.inputs],
                                                  output_names=[t.name for t in frozen.outputs])
        extra = [i.name for i in proto.graph.input][1:]
        if extra:
            raise RuntimeError(f"the ONNX graph wants inputs besides the image: {', '.join(extra)}")
        _rename(proto, proto.graph.input[0].name, "image")
        _rename(proto, proto.graph.output[0].name, "probabilities")
        _erfc_as_erf(proto)
        missing = sorted({node.op_type for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain)})
        if missing:
            raise TltoolError(f"--format onnx: the model uses the TensorFlow op {', '.join(missing)}, which ONNX has "
                              "no operator for; export to savedmodel, keras or litert instead")
        entry = proto.metadata_props.add()
        entry.key, entry.value = "tltool", json.dumps(tier_c(info))
        onnx.save(proto, tmp)
    return path


def _rename(proto, old: str, new: str) -> None:
    """Rename a tensor of an ONNX graph everywhere it appears."""
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name == old:
            value.name = new
    for node in proto.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _erfc_as_erf(proto) -> None:
    """Rewrite each Erfc (the exact GELU of transformers: 0.5 x erfc(-x / sqrt 2)) as 1 - Erf, which ONNX has."""
    from onnx import helper, numpy_helper

    nodes = list(proto.graph.node)
    if not any(node.op_type == "Erfc" for node in nodes):
        return
    one = "tltool_one"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    rewritten = []
    for node in nodes:
        if node.op_type != "Erfc":
            rewritten.append(node)
            continue
        erf = f"{node.output[0]}_erf"
        rewritten += [helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"),
                      helper.make_node("Sub", [one, erf], [node.output[0]], name=f"{node.name}_one_minus")]
    del proto.graph.node[:]
    proto.graph.node.extend(rewritten)


def export_litert(model, path: str, info: dict, kind: str = "litert") -> str:
    """Float LiteRT flatbuffer (float32 or float16 weights) with built-in operators only, and its sidecar.

    Built-in operators only (no Flex delegate), so the file runs in the
    standalone `ai-edge-litert` interpreter; the sidecar is `<path>.json`.
    """
    import tensorflow as tf

    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if kind == "litert-fp16":
        options = {"optimizations": [tf.lite.Optimize.DEFAULT],
                   "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
                                   "supported_types": [tf.float16]}}
    with atomic_path(path) as tmp, native_output_hidden(), litert_ops_named(kind):
        model.export(tmp, format="litert", verbose=False, input_signature=signature(info), **options)
    write_json(path + ".json", {**tier_c(info), "format": kind})
    return path


@contextlib.contextmanager
def litert_ops_named(kind: str):
    """A conversion that fails on operators LiteRT's built-ins lack becomes one line naming them."""
    try:
        yield
    except Exception as e:
        missing = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(e))))
        if not missing:
            raise
        raise TltoolError(f"--format {kind}: the model uses the TensorFlow op {', '.join(missing)}, which LiteRT's "
                          "built-in operators cannot run; export to savedmodel, keras or onnx instead") from None


def signature(info: dict) -> list:
    import tensorflow as tf

    size = info["image_size"]
    return [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]


def _representative(samples: list[str], size: int, aspect: str, decoded: np.ndarray | None = None):
    """The converter's calibration batches, one image each; `decoded` holds the first ones already prepared
    (each calibration pass would decode them again)."""
    from tltool.data.contract import prepare_file

    done = 0 if decoded is None else len(decoded)

    def batches():
        for i, path in enumerate(samples):
            yield [decoded[i][None] if i < done else prepare_file(path, size, aspect)[None].astype(np.float32)]

    return batches


def export_litert_int8(model, path: str, info: dict, calibration: list[str], int8_io: str = "float",
                       float_layers: str = "auto"):
    """int8 LiteRT flatbuffer (`tltool.serving.quantize`) and its sidecar; returns the `Int8Model`.

    Args:
        calibration: training images that calibrate the value ranges; the
            first `COMPARED_IMAGES` of them also judge the float fallback.
        int8_io: float (the file takes and gives float32) or uint8 (pixels as
            uint8; probabilities as uint8, scale 1/256).
        float_layers: auto or none, as `tltool.serving.quantize.int8_model` takes.
    """
    from tltool.data.contract import prepare_file
    from tltool.serving.quantize import int8_model

    size, aspect = info["image_size"], info["aspect"]
    pixels = np.stack([prepare_file(p, size, aspect) for p in calibration[:COMPARED_IMAGES]]).astype(np.float32)
    with litert_ops_named("litert-int8"):
        result = int8_model(model, signature(info), pixels, _representative(calibration, size, aspect, pixels),
                            int8_io, float_layers)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(result.flatbuffer)
    described = tier_c(info)
    if int8_io == "uint8":
        described["input"]["dtype"] = "uint8"
        described["output"] = "probabilities (N, classes) as uint8: divide by 256 (see the output's quantization)"
    write_json(path + ".json", {**described, "format": "litert-int8", "float_layers": result.float_layers})
    return result
