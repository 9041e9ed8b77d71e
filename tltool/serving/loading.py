"""Loading a trained classifier (run directory, SavedModel or .keras file) and running it.

All three give a `TrainedModel`: class names, input size, aspect policy, and
a function from float32 pixel batches to probabilities. Batches are decoded by
the tf.data pipeline in parallel while the model runs on the previous one.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tltool.errors import TltoolError
from tltool.runs.run import Run


@dataclass
class TrainedModel:
    source: str
    kind: str  # "keras" | "savedmodel" | "onnx" | "litert"
    classes: list[str]
    image_size: int
    aspect: str
    run_dir: str | None
    forward: Callable  # float32 (N, S, S, 3) pixels -> (N, C) probabilities
    keras_model: object | None = None  # the keras.Model, when loaded from a .keras file
    task: str | None = None  # the task's name, as the file records it (None: from before tasks, single-label)
    decision: dict | None = None  # what the task decides by (multi-label: {"thresholds": [...]}), as recorded
    backbone: str | None = None  # the backbone's name, as the run or the file records it
    served: object | None = None  # the loaded SavedModel, whose signatures go beyond `forward` (``gradcam``)

    @property
    def run(self) -> Run | None:
        return Run(self.run_dir) if self.run_dir else None

    def probabilities(self, paths: list[str], batch_size: int = 32, progress: bool = False, views=("plain",)):
        """(probabilities averaged over `views`, index into `paths` of each row)."""
        return predict_images(self.forward, paths, self.image_size, self.aspect, batch_size, progress, views)

    def view_probabilities(self, paths: list[str], batch_size: int = 32, progress: bool = False, views=("plain",)):
        """(probabilities per view, shape (views, N, C), index into `paths` of each row)."""
        return predict_views(self.forward, paths, self.image_size, self.aspect, batch_size, progress, views)

    def backbone_spec(self):
        """The spec of the backbone the model records (a run's kept copy of a local preset that went away).

        Raises:
            TltoolError: the model records none, or names one this tltool does not know.
        """
        from tltool.models.registry import get_backbone

        if not self.backbone:
            raise TltoolError(f"{self.source}: records no backbone; give a run directory tltool wrote")
        return get_backbone(self.run.backbone_source(self.backbone) if self.run else self.backbone)

    @property
    def flip(self) -> str:
        """The flips the run's recipe trained with (test-time augmentation mirrors only then)."""
        return ((self.run.recipe if self.run else {}).get("augment") or {}).get("flip", "none")


def load_trained(path: str) -> TrainedModel:
    """Open a run directory, a SavedModel folder or a .keras file.

    Raises:
        TltoolError: the path does not exist or holds no usable model; the
            message says what was expected.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise TltoolError(f"{path}: no such file or folder; give a run directory, a SavedModel or a .keras file")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _savedmodel(path)
    if os.path.isdir(path):
        model_file = Run(path).model_file
        if os.path.isfile(model_file):
            return _keras(model_file, run_dir=path)
        if Run.is_run(path):
            raise TltoolError(f"{path}: this run has no model.keras; it did not finish (see its history.csv)")
        raise TltoolError(f"{path}: not a run directory or a SavedModel (no model.keras, no saved_model.pb)")
    if path.endswith(".keras"):
        parent = os.path.dirname(path)
        return _keras(path, run_dir=parent if Run.is_run(parent) else _run_above(parent))
    if path.endswith((".onnx", ".tflite")):
        return _exported(path)
    raise TltoolError(f"{path}: not a model; give a run directory, a SavedModel folder, or a .keras, .onnx or "
                      ".tflite file")


def _run_above(folder: str) -> str | None:
    """The run directory of a file in RUN/export/."""
    parent = os.path.dirname(folder)
    return parent if os.path.basename(folder) == "export" and Run.is_run(parent) else None


def _exported(path: str) -> TrainedModel:
    from tltool.serving.runtimes import load

    info, forward = load(path)
    forward.numpy_only = True  # a runtime outside TensorFlow: give it arrays, never trace it
    kind = "onnx" if path.endswith(".onnx") else "litert"
    return TrainedModel(path, kind, list(info["classes"]), int(info["image_size"]), info["aspect"],
                        _run_above(os.path.dirname(path)), forward, task=info.get("task"), decision=_decision(info))


def _keras(path: str, run_dir: str | None) -> TrainedModel:
    import keras

    import tltool.models.layers  # noqa: F401  (registers tltool's layers for loading)

    beside = Run(os.path.dirname(path))  # a run directory, or a copy of its files
    if _uses_keras_hub(path):
        from tltool.models.hub import require_keras_hub

        require_keras_hub()  # registers its layers for loading
    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as e:  # not a .keras file, or not ours (a bug keeps its traceback)
        raise TltoolError(f"{path}: cannot load this .keras file ({str(e).splitlines()[0][:200]})") from None
    if os.path.isfile(path + ".json"):  # written by `tltool export`
        with open(path + ".json", encoding="utf-8") as f:
            info = json.load(f)
        classes, aspect, task, decision = list(info["classes"]), info["aspect"], info.get("task"), _decision(info)
        backbone = info.get("backbone")
    elif os.path.isfile(beside.file("classes.json")):
        classes, recipe = beside.classes, beside.recipe
        aspect, task = (recipe.get("data") or {}).get("aspect", "stretch"), recipe.get("task")
        decision, backbone = beside.decision, recipe.get("backbone")
    else:
        raise TltoolError(f"{path}: no classes.json beside it; copy the run's classes.json next to the model")
    size = int(model.input_shape[1])
    _check_width(path, len(classes), int(model.output_shape[-1]))
    if task is None:
        _require_softmax(path, model)
    from tltool.models.classifier import forward_function

    return TrainedModel(path, "keras", classes, size, aspect, run_dir, forward_function(model, size), model, task,
                        decision, backbone)


def _uses_keras_hub(path: str) -> bool:
    """Whether a .keras file holds keras-hub layers (read from its config, without loading it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return b'"keras_hub' in archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False


def _savedmodel(path: str) -> TrainedModel:
    import tensorflow as tf

    from tltool.serving.formats import read_info

    info = read_info(path)
    if info is None:
        raise TltoolError(f"{path}: a SavedModel without assets/tltool.json; export it with tltool")
    loaded = tf.saved_model.load(path)
    parent = os.path.dirname(path)
    run_dir = parent if Run.is_run(parent) else None
    return TrainedModel(path, "savedmodel", list(info["classes"]), int(info["image_size"]), info["aspect"],
                        run_dir, lambda x: loaded.serve(x)["probabilities"], task=info.get("task"),
                        decision=_decision(info), backbone=info.get("backbone"), served=loaded)


def _decision(info: dict) -> dict | None:
    """The decision an exported file's info carries (`Task.metadata`)."""
    return {"thresholds": info["thresholds"]} if info.get("thresholds") else None


def _require_softmax(path: str, model) -> None:
    """A model whose task nothing records is read as single-label, as models from before tasks were: only one
    with a softmax output is.

    Raises:
        TltoolError: another output (a multi-label model's sigmoid), with what to copy beside it.
    """
    try:
        activation = model.get_layer("predictions").activation.__name__
    except (ValueError, AttributeError):
        return  # not a classifier tltool built: nothing to tell from
    if activation != "softmax":
        raise TltoolError(f"{path}: its output is a {activation} (several labels per image), but nothing beside it "
                          "records the task; copy the run's recipe.yaml and decision.json next to it, or export it "
                          "with `tltool export RUN --format keras`")


def _check_width(path: str, classes: int, outputs: int) -> None:
    if classes != outputs:
        raise TltoolError(f"{path}: classes.json names {classes} classes but the model has {outputs} outputs")


def predict_images(forward, paths: list[str], image_size: int, aspect: str, batch_size: int = 32,
                   progress: bool = False, views=("plain",), desc: str = "predicting"):
    """Probabilities for each decodable file in `paths`, averaged over test-time `views`.

    Args:
        forward: float32 (N, S, S, 3) pixel batches -> probabilities (a Keras
            model, a tf.function, or a SavedModel endpoint).
        views: names from `tltool.data.tta.views`; the default is the image alone.
        desc: the progress bar's label.

    Returns:
        (probs, kept): probabilities, and the index into `paths` of each row;
        files that fail to decode are absent from `kept`.
    """
    probs, kept = predict_views(forward, paths, image_size, aspect, batch_size, progress, views, desc)
    return probs.mean(axis=0), kept


def predict_views(forward, paths: list[str], image_size: int, aspect: str, batch_size: int = 32,
                  progress: bool = False, views=("plain",), desc: str = "predicting"):
    """Like `predict_images`, with the probabilities of each view kept apart: shape (views, N, C)."""
    import tensorflow as tf
    from tqdm import tqdm

    from tltool.data.pipeline import decode_dataset, finish
    from tltool.data.tta import apply_view

    # Each image carries its index, so the decoders may finish out of order.
    ds = finish(decode_dataset(paths, image_size, aspect, ordered=False).batch(batch_size).prefetch(tf.data.AUTOTUNE))
    numpy_only = getattr(forward, "numpy_only", False)
    if not isinstance(forward, tf.types.experimental.PolymorphicFunction) and not numpy_only:
        # Called batch by batch outside a tf.function, a Keras model runs
        # eagerly, op by op: slower, and 1.5 GB more memory for 400 images.
        import keras

        from tltool.models.classifier import forward_function

        forward = forward_function(forward, image_size) if isinstance(forward, keras.Model) \
            else tf.function(forward, reduce_retracing=True)
    probs, kept = [], []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True,
              leave=False) as bar:
        for images, index in ds:
            pixels = tf.cast(images, tf.float32)
            views_of = [apply_view(pixels, view) for view in views]
            probs.append(np.stack([np.asarray(forward(v.numpy() if numpy_only else v)) for v in views_of]))
            kept.append(np.asarray(index))
            bar.update(len(kept[-1]))
    if not probs:
        return np.zeros((len(views), 0, 0), np.float32), np.zeros((0,), np.int64)
    probs, kept = np.concatenate(probs, axis=1), np.concatenate(kept)
    order = np.argsort(kept, kind="stable")
    return probs[:, order], kept[order]
