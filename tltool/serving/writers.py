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

import itertools
import json
import os
import shutil
import time

import numpy as np

from tltool.console import native_output_hidden, say, warn
from tltool.errors import ExportCheckFailed, TltoolError
from tltool.files import atomic_path, write_json
from tltool.serving.quantize import FLOAT_LAYERS
from tltool.runs.run import classes_json, read_recipe
from tltool.serving.runtimes import run_batches

FORMATS = {"savedmodel": "saved_model", "keras": "model.keras", "onnx": "model.onnx", "litert": "model.tflite",
           "litert-fp16": "model_fp16.tflite", "litert-int8": "model_int8.tflite"}
ALIASES = {"tflite": "litert"}
EXTRA = "pip install 'tltool[export]'"
REPORT = "export_report.json"
COMPARED_IMAGES = 200


def model_info(classes: list[str], image_size: int, aspect: str, backbone: str) -> dict:
    from tltool.data.contract import VERSION

    return {"classes": classes, "image_size": image_size, "aspect": aspect, "backbone": backbone,
            "input_contract": VERSION}


# ---------------------------------------------------------------- SavedModel and .keras


def export_saved_model(model, path: str, info: dict) -> str:
    """Write `model` (the inference model) as a SavedModel at `path`, atomically.

    Signatures: ``serving_default``/``serve`` (float32 pixels 0-255, any
    size), ``serve_uint8`` (the same as uint8) and ``serve_bytes`` (encoded
    images, (N,) strings), each preparing its input with `tltool.data.contract`
    and returning ``probabilities``, ``class_id``, ``class_name`` and
    ``score``. ``assets/classes.json`` and ``assets/tltool.json`` go beside.

    A plain tf.Module rather than Keras' ExportArchive: the model is traced
    once and the signatures call that one graph, which halves the time of
    the export (the last step of every `fit`).
    """
    import tensorflow as tf

    from tltool.data import contract

    size, aspect = info["image_size"], info["aspect"]
    names = tf.constant(info["classes"])
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])

    def outputs(inputs):
        probs = forward(tf.cast(inputs, tf.float32))
        ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_id": ids, "class_name": tf.gather(names, ids),
                "score": tf.reduce_max(probs, axis=-1)}

    def from_pixels(images):
        return outputs(contract.fit_to_square(contract.pixels_to_uint8(images), size, aspect))

    def from_bytes(data):
        return outputs(tf.map_fn(lambda d: contract.prepare_bytes(d, size, aspect), data,
                                 fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8)))

    served = tf.Module()
    served.model_variables = [getattr(v, "value", v) for v in model.variables]
    served.serve = tf.function(from_pixels, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                                           name="images")])
    served.serve_uint8 = tf.function(from_pixels, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                                                 name="images")])
    served.serve_bytes = tf.function(from_bytes, input_signature=[tf.TensorSpec([None], tf.string,
                                                                                name="image_bytes")])
    signatures = {"serving_default": served.serve, "serve": served.serve, "serve_uint8": served.serve_uint8,
                  "serve_bytes": served.serve_bytes}
    with atomic_path(path) as tmp:
        tf.saved_model.save(served, tmp, signatures=signatures)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        write_json(os.path.join(assets, "classes.json"), classes_json(info["classes"]))
        write_json(os.path.join(assets, "tltool.json"), info)
    return path


def save_keras(model, path: str) -> str:
    from tltool.console import pause_point

    with atomic_path(path) as tmp:
        model.save(tmp)
        pause_point("export")
    return path


# ---------------------------------------------------------------- ONNX and LiteRT


def _tier_c(info: dict) -> dict:
    size = info["image_size"]
    return {**info, "input": {"shape": [None, size, size, 3], "dtype": "float32", "range": [0, 255],
                              "layout": "RGB, decoded and fitted to S x S as tltool.data.contract.prepare_file does"},
            "output": "probabilities (N, classes)"}


def export_onnx(model, path: str, info: dict) -> str:
    """ONNX (through Keras' exporter and tf2onnx) with the model info in `metadata_props`."""
    import warnings

    import onnx

    _normalization_as_variables(model)
    with atomic_path(path) as tmp, native_output_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)  # inside Keras' tf2onnx shim
        model.export(tmp, format="onnx", verbose=False, input_signature=_signature(info))
        proto = onnx.load(tmp)
        extra = [i.name for i in proto.graph.input][1:]
        if extra:
            raise RuntimeError(f"the ONNX graph wants inputs besides the image: {', '.join(extra)}")
        entry = proto.metadata_props.add()
        entry.key, entry.value = "tltool", json.dumps(_tier_c(info))
        onnx.save(proto, tmp)
    return path


def _normalization_as_variables(model) -> None:
    """Make adapted Normalization layers (EfficientNet's first) hold their mean and variance as variables.

    Keras keeps them as eager tensors, which tf2onnx turns into extra graph
    inputs instead of constants; variables are frozen into the file like
    every weight. Only for a model loaded to be exported.
    """
    import keras
    import tensorflow as tf

    from tltool.models.freeze import every_layer

    for layer in every_layer(model):
        if isinstance(layer, keras.layers.Normalization) and getattr(layer, "adapt_mean", None) is not None:
            layer.mean = tf.Variable(np.asarray(layer.mean), trainable=False)
            layer.variance = tf.Variable(np.asarray(layer.variance), trainable=False)


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
    with atomic_path(path) as tmp, native_output_hidden():
        model.export(tmp, format="litert", verbose=False, input_signature=_signature(info), **options)
    write_json(path + ".json", {**_tier_c(info), "format": kind})
    return path


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
    result = int8_model(model, _signature(info), pixels, _representative(calibration, size, aspect), int8_io,
                        float_layers)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(result.flatbuffer)
    described = _tier_c(info)
    if int8_io == "uint8":
        described["input"]["dtype"] = "uint8"
        described["output"] = "probabilities (N, classes) as uint8: divide by 256 (see the output's quantization)"
    write_json(path + ".json", {**described, "format": "litert-int8", "float_layers": result.float_layers})
    return result


def _signature(info: dict) -> list:
    import tensorflow as tf

    size = info["image_size"]
    return [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")]


def _representative(samples: list[str], size: int, aspect: str):
    from tltool.data.contract import prepare_file

    def batches():
        for path in samples:
            yield [prepare_file(path, size, aspect)[None].astype(np.float32)]

    return batches


# ---------------------------------------------------------------- the command


def export(model: str, fmt: str, out: str | None = None, calibration_images: int = 200, int8_io: str = "float",
           max_accuracy_drop: float = 1.0, verify: bool = True, float_layers: str = "auto") -> str:
    """Export a run directory's (or a .keras file's) model as `fmt`, then check the file.

    Args:
        model: a run directory or a .keras file.
        fmt: one of FORMATS (or an alias).
        out: the file or folder to write; default RUN/export/<name>. An
            existing one is never replaced.
        calibration_images: training images that calibrate int8 quantization.
        int8_io: float or uint8 input and output for litert-int8.
        float_layers: litert-int8: auto keeps the layers int8 hurts most in
            float until the file agrees with the Keras model on the top-1 of
            99% of the calibration images; none makes a full-integer file
            (`tltool.serving.quantize`).
        max_accuracy_drop: percentage points of accuracy the file may lose
            against the Keras model (and at least 2 images) before the
            export counts as failed.
        verify: run the file on the run's validation (or test) images.

    Returns:
        The path written.

    Raises:
        TltoolError: a bad path or format, `out` exists, a missing extra.
        ExportCheckFailed: the file loses more accuracy than allowed (it is kept).
    """
    from tltool.serving.loading import load_trained

    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise TltoolError(f"--format {fmt}: give one of {', '.join([*FORMATS, *ALIASES])}")
    _require_extra(fmt)
    trained = load_trained(model)
    if trained.keras_model is None:
        raise TltoolError(f"{model}: a {trained.kind} is already exported; give its run directory or a .keras file")
    folder = os.path.join(os.path.dirname(trained.source), "export")
    out = out or os.path.join(folder, FORMATS[fmt])
    if os.path.exists(out):
        raise TltoolError(f"--out {out}: exists; choose another --out (an export is never replaced)")
    if float_layers not in FLOAT_LAYERS:
        raise TltoolError(f"--int8-float-layers {float_layers}: give one of {', '.join(FLOAT_LAYERS)}")
    backbone = read_recipe(trained.run_dir).get("backbone") or "unknown"
    info = model_info(trained.classes, trained.image_size, trained.aspect, backbone)
    samples = _samples(trained)
    start, notes = time.perf_counter(), {}
    if fmt == "savedmodel":
        export_saved_model(trained.keras_model, out, info)
    elif fmt == "keras":
        with atomic_path(out) as tmp:
            shutil.copyfile(trained.source, tmp)
        write_json(out + ".json", _tier_c(info))
    elif fmt == "onnx":
        export_onnx(trained.keras_model, out, info)
    elif fmt == "litert-int8":
        notes = _int8(trained, out, info, samples, calibration_images, int8_io, float_layers)
    else:
        export_litert(trained.keras_model, out, info, fmt)
    seconds = time.perf_counter() - start
    say(f"wrote {out} ({_size(out) / 2**20:,.1f} MB) in {seconds:.0f} s")
    if verify:
        check(trained, out, fmt, samples, max_accuracy_drop, notes)
    return out


def _int8(trained, out: str, info: dict, samples: dict, calibration_images: int, int8_io: str,
          float_layers: str) -> dict:
    calibration = calibration_sample(samples.get("train", []), calibration_images)
    if not calibration:
        raise TltoolError(f"--format litert-int8: the run's training images are not available to calibrate "
                          f"the quantization (dataset {samples.get('root')!r}); restore them")
    result = export_litert_int8(trained.keras_model, out, info, calibration, int8_io, float_layers)
    count = len(result.float_layers)
    kept = f"{count} layer{'s' * (count > 1)} kept in float ({', '.join(result.float_layers)})"
    say(f"int8: {kept if result.float_layers else 'full integer'}; top-1 agrees with the Keras model on "
        f"{100 * result.agreement:.1f}% of {min(len(calibration), COMPARED_IMAGES)} calibration images "
        f"(full integer: {100 * result.full_integer_agreement:.1f}%)")
    return {"float_layers": result.float_layers, "calibration_agreement": result.agreement,
            "full_integer_calibration_agreement": result.full_integer_agreement}


def _require_extra(fmt: str) -> None:
    needed = {"onnx": ("onnx", "onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}
    for module in needed.get(fmt.split("-")[0], ()):
        try:
            __import__(module)
        except ImportError:
            raise TltoolError(f"--format {fmt} needs the {module} package: {EXTRA}") from None


def _samples(trained) -> dict:
    """The run's images by split, as absolute paths (empty when the dataset is not where the run found it)."""
    import pandas as pd

    if not trained.run_dir:
        return {}
    root = (read_recipe(trained.run_dir).get("provenance") or {}).get("dataset")
    index_path = os.path.join(trained.run_dir, "data", "index.csv")
    if not root or not os.path.isfile(index_path):
        return {}
    index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    found = {"root": root}
    for split in ("train", "val", "test"):
        rows = index[index["split"] == split]
        found[split] = [(os.path.join(root, p), label) for p, label in zip(rows["path"], rows["label"])]
    return found


def calibration_sample(rows: list[tuple[str, str]], n: int) -> list[str]:
    """n paths of (path, label) rows taken from each class in turn.

    index.csv lists the images class by class, so its first n would
    calibrate int8 value ranges on one or two classes only.
    """
    by_class: dict[str, list[str]] = {}
    for path, label in rows:
        by_class.setdefault(label, []).append(path)
    turns = itertools.zip_longest(*by_class.values())
    return [path for turn in turns for path in turn if path is not None][:n]


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


# ---------------------------------------------------------------- checking an export


def check(trained, path: str, fmt: str, samples: dict, max_accuracy_drop: float, notes: dict | None = None) -> dict | None:
    """Run the exported file on the run's validation (or test) images; write and print the comparison."""
    from tltool.data.contract import prepare_file
    from tltool.serving.loading import load_trained

    split = "test" if samples.get("test") else "val"
    rows = [(p, label) for p, label in samples.get(split, []) if os.path.isfile(p)]
    if not rows:
        warn(f"not checked: the run's validation and test images are not at {samples.get('root')!r}")
        return None
    index = {c: i for i, c in enumerate(trained.classes)}
    pixels = np.stack([prepare_file(p, trained.image_size, trained.aspect) for p, _ in rows]).astype(np.float32)
    labels = np.array([index[label] for _, label in rows])
    exported = load_trained(path)
    reference = run_batches(trained.forward, pixels)
    probs = run_batches(exported.forward, pixels)
    accuracy, base = float((probs.argmax(1) == labels).mean()), float((reference.argmax(1) == labels).mean())
    lost = int((reference.argmax(1) == labels).sum() - (probs.argmax(1) == labels).sum())
    report = {
        "format": fmt, "file": os.path.abspath(path), "bytes": _size(path), "split": split, "images": len(rows),
        "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "max_probability_difference": float(np.abs(probs - reference).max()),
        "accuracy": accuracy, "keras_accuracy": base, "accuracy_change": accuracy - base,
        "latency_ms_per_image": {"batch_1": _latency(exported.forward, pixels, 1),
                                 "batch_32": _latency(exported.forward, pixels, 32)},
        "max_accuracy_drop": max_accuracy_drop, **(notes or {}),
    }
    report["passed"] = not (100 * (base - accuracy) > max_accuracy_drop and lost >= 2)
    _write_report(os.path.dirname(os.path.abspath(path)), fmt, report)
    latency = report["latency_ms_per_image"]
    say(f"{fmt}: {report['bytes'] / 2**20:,.1f} MB; on {len(rows)} {split} images: top-1 agrees with Keras on "
        f"{100 * report['top1_agreement']:.1f}%, max probability difference {report['max_probability_difference']:.1e}; "
        f"accuracy {100 * accuracy:.2f}% ({100 * report['accuracy_change']:+.2f} points); "
        f"{latency['batch_1']:.2f} ms/image at batch 1, {latency['batch_32']:.2f} at batch 32")
    if not report["passed"]:
        raise ExportCheckFailed(f"{path}: accuracy {100 * accuracy:.2f}% is {100 * (base - accuracy):.2f} points "
                                f"below the Keras model's ({lost} images), more than --max-accuracy-drop "
                                f"{max_accuracy_drop}; the file is kept for inspection")
    return report


def _latency(forward, pixels: np.ndarray, batch: int) -> float:
    """Milliseconds per image, median of a few timed calls after a warm-up."""
    x = np.resize(pixels, (batch, *pixels.shape[1:]))
    forward(x)
    times = []
    for _ in range(max(3, 32 // batch)):
        start = time.perf_counter()
        np.asarray(forward(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000 / batch)


def _write_report(folder: str, fmt: str, report: dict) -> None:
    path = os.path.join(folder, REPORT)
    reports = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            reports = json.load(f)
    write_json(path, {**reports, fmt: report})


def read_info(folder: str) -> dict | None:
    """tltool.json from a SavedModel's assets, if there is one."""
    path = os.path.join(folder, "assets", "tltool.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
