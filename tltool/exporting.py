"""Exporting a trained classifier: SavedModel with serving signatures, .keras, TFLite.

The SavedModel carries everything a server needs and no Python: images of any
size are resized inside (with the run's aspect policy), the class names are
constants in the graph, and three signatures are offered:

- ``serving_default`` / ``serve``: float32 RGB pixels 0-255, shape (N, H, W, 3);
- ``serve_uint8``: the same as uint8;
- ``serve_bytes``: encoded JPEG/PNG/GIF/BMP/WebP bytes, shape (N,).

Each prepares its input with `tltool.contract` (the input tiers are defined
there).

Each returns ``probabilities`` (N, C), ``class_id`` (N,), ``class_name`` (N,)
and ``score`` (N,). ``assets/classes.json`` and ``assets/tltool.json`` (image
size, aspect policy) are stored beside the graph.
"""

from __future__ import annotations

import json
import os

from tltool.files import atomic_path, write_json
from tltool.rundir import classes_json, read_recipe


def model_info(classes: list[str], image_size: int, aspect: str, backbone: str) -> dict:
    from tltool.contract import VERSION

    return {"classes": classes, "image_size": image_size, "aspect": aspect, "backbone": backbone,
            "input_contract": VERSION}


def export_saved_model(model, path: str, info: dict) -> str:
    """Write `model` (the inference model) as a SavedModel at `path`, atomically.

    Every signature turns its input into the model's input with
    `tltool.contract`, the functions training and `predict` use.
    """
    import keras
    import tensorflow as tf

    from tltool import contract

    size, aspect = info["image_size"], info["aspect"]
    names = tf.constant(info["classes"])

    def outputs(inputs):
        probs = model(tf.cast(inputs, tf.float32), training=False)
        ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_id": ids, "class_name": tf.gather(names, ids),
                "score": tf.reduce_max(probs, axis=-1)}

    def from_pixels(images):
        return outputs(contract.fit_to_square(contract.pixels_to_uint8(images), size, aspect))

    def from_bytes(data):
        return outputs(tf.map_fn(lambda d: contract.prepare_bytes(d, size, aspect), data,
                                 fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", from_pixels, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint("serve_uint8", from_pixels, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("serve_bytes", from_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    with atomic_path(path) as tmp:
        archive.write_out(tmp, verbose=False)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        write_json(os.path.join(assets, "classes.json"), classes_json(info["classes"]))
        write_json(os.path.join(assets, "tltool.json"), info)
    return path


def save_keras(model, path: str) -> str:
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def export_tflite(model, path: str) -> str:
    """A TFLite flatbuffer of the inference model: (1, S, S, 3) float pixels in, probabilities out.

    Resizing is left to the caller (TFLite has no anti-aliased resize op).
    """
    import tensorflow as tf

    from tltool.console import native_output_hidden

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with native_output_hidden():  # the converter prints hundreds of "Captures:" lines
        data = converter.convert()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def export(model: str, fmt: str, out: str | None = None) -> str:
    """Export a run directory's (or a .keras file's) model as `fmt`.

    Args:
        model: a run directory or a .keras file.
        fmt: savedmodel | keras | tflite.
        out: the file or folder to write; by default beside the model
            (model.tflite, saved_model_export/, model_export.keras). An
            existing one is never replaced.

    Raises:
        TltoolError: a bad path, a SavedModel given as MODEL, or `out` exists.
    """
    import shutil

    from tltool.errors import TltoolError
    from tltool.inference import load_trained

    trained = load_trained(model)
    if trained.keras_model is None:
        raise TltoolError(f"{model}: a SavedModel is already exported; give its run directory or a .keras file")
    folder = os.path.dirname(trained.source)
    out = out or os.path.join(folder, {"tflite": "model.tflite", "savedmodel": "saved_model_export",
                                       "keras": "model_export.keras"}[fmt])
    if os.path.exists(out):
        raise TltoolError(f"--out {out}: exists; choose another --out (an export is never replaced)")
    if fmt == "tflite":
        return export_tflite(trained.keras_model, out)
    if fmt == "keras":
        with atomic_path(out) as tmp:
            shutil.copyfile(trained.source, tmp)
        return out
    backbone = read_recipe(trained.run_dir).get("backbone") or "unknown"
    return export_saved_model(trained.keras_model, out,
                              model_info(trained.classes, trained.image_size, trained.aspect, backbone))


def read_info(folder: str) -> dict | None:
    """tltool.json from a SavedModel's assets, if there is one."""
    path = os.path.join(folder, "assets", "tltool.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
