"""The Python API: what the command line does, as functions and a `Run` object.

    import tltool
    run = tltool.fit("data/", backbone="mobilenetv2", weights="imagenet")
    print(run.metrics["accuracy"], run.classes)
    folder, evaluation = tltool.evaluate(run, "more_data/")
    rows, skipped, classes = tltool.predict(run, ["photo.jpg"])
    explained = tltool.explain(run, ["photo.jpg"])   # Grad-CAM: explanations.csv and overlays
    model = run.load_model()           # the keras.Model, taking (N, S, S, 3) pixels 0-255

Each function's keyword arguments come from the command's table in
`tltool.options`, the same rows that make its command-line flags; an unknown
keyword is a TypeError that names the closest one.
"""

from __future__ import annotations

import os

from tltool import options
from tltool.runs.run import Run as RunDirectory


class Run(RunDirectory):
    """A run directory written by `fit` (`tltool.runs.Run`), with the API's verbs as methods.

    Path-like: it goes wherever a run directory's path does.
    """

    def load_model(self):
        """The trained keras.Model (float32 (N, S, S, 3) RGB pixels 0-255 in, probabilities out)."""
        return load_model(self)

    def evaluate(self, data: str, **kwargs):
        return evaluate(self, data, **kwargs)

    def predict(self, inputs: list[str], **kwargs):
        return predict(self, inputs, **kwargs)

    def explain(self, inputs: list[str], **kwargs):
        return explain(self, inputs, **kwargs)

    def export(self, fmt: str, **kwargs) -> str:
        return export(self, fmt, **kwargs)


def _keeps_caller_state(function):
    """The caller's random state (Python's, NumPy's, Keras' and TensorFlow's seeds) is as it was after the call:
    a command may seed what it builds (audit's `--weights none` backbone), never the caller's notebook."""
    import functools

    @functools.wraps(function)
    def kept(*args, **kwargs):
        from tltool.compat import random_state

        with random_state():
            return function(*args, **kwargs)

    return kept


@options.FIT.api("data", returns="Run")
def fit(data: str | None = None, **kwargs) -> Run:
    """Train on a folder of images (or a CSV); returns the run directory.

    `tltool.fit(None, resume=RUN)` continues an interrupted run.
    """
    from tltool.workflows.fitting import fit as run_fit

    run, _ = run_fit(None if data is None else os.fspath(data), **_paths(kwargs))
    return Run(run.path)


@options.LR_FIND.api("data")
def lr_find(data: str, **kwargs):
    """The learning-rate range test; returns (the Sweep, the folder with lr_find.png and lr_find.csv)."""
    from tltool.workflows.fitting import lr_find as run_lr_find

    return run_lr_find(os.fspath(data), **_paths(kwargs))


def open_run(path) -> Run:
    """A run directory made by `fit`, as a `Run`.

    Raises:
        TltoolError: the folder is not one that tltool made.
    """
    return Run(RunDirectory.open(path).path)


@options.EVALUATE.api("model", "data")
@_keeps_caller_state
def evaluate(model, data: str, **kwargs):
    """Evaluate a run, SavedModel, .keras, .onnx or .tflite file on `data`; returns (folder, Evaluation)."""
    from tltool.workflows.evaluating import evaluate as run_evaluate

    return run_evaluate(os.fspath(model), os.fspath(data), **_paths(kwargs))


@options.PREDICT.api("model", "inputs")
@_keeps_caller_state
def predict(model, inputs: list[str], **kwargs):
    """Predict image files and folders; returns (rows, skipped files with reasons, classes)."""
    from tltool.workflows.predicting import predict as run_predict

    return run_predict(os.fspath(model), [os.fspath(i) for i in inputs], **kwargs)


@options.AUDIT.api("data")
@_keeps_caller_state
def audit(data, **kwargs):
    """Duplicates, leaks across splits, likely label errors and outliers in a dataset; returns
    `tltool.workflows.auditing.Audit` (the folder and each finding as a DataFrame)."""
    from tltool.workflows.auditing import audit as run_audit

    return run_audit(os.fspath(data), **_paths(kwargs))


@options.EXPLAIN.api("model", "inputs")
@_keeps_caller_state
def explain(model, inputs: list[str], **kwargs):
    """Grad-CAM heatmaps of a run (or .keras file, or SavedModel) for image files and folders; returns
    `tltool.workflows.explaining.Explained` (the folder, the rows of explanations.csv, skipped files)."""
    from tltool.workflows.explaining import explain as run_explain

    return run_explain(os.fspath(model), [os.fspath(i) for i in inputs], **_paths(kwargs))


@options.EXPORT.api("model", "fmt", returns="str")
@_keeps_caller_state
def export(model, fmt: str, **kwargs) -> str:
    """Write `model` as savedmodel | keras | onnx | litert | litert-fp16 | litert-int8, checked; returns its path."""
    from tltool.workflows.exporting import export as run_export

    return run_export(os.fspath(model), fmt, **_paths(kwargs))


def load_model(path):
    """Load a run directory's model.keras (or a .keras file) with tltool's layers registered."""
    from tltool.errors import TltoolError
    from tltool.serving.loading import load_trained

    model = load_trained(os.fspath(path)).keras_model
    if model is None:
        raise TltoolError(f"{os.fspath(path)}: a SavedModel; load it with tf.saved_model.load")
    return model


@options.PLAN.api()
def plan(**kwargs):
    """What each phase of a recipe trains on a backbone and what it costs (`tltool.workflows.planning.Plan`)."""
    from tltool.workflows.planning import plan as make_plan

    return make_plan(**kwargs)


@options.VALIDATE.api("file")
def validate_recipe(file: str, **kwargs):
    """Check a recipe file without training (`tltool.workflows.planning.Validation`); raises RecipeError."""
    from tltool.workflows.planning import validate_recipe as check

    return check(os.fspath(file), **kwargs)


def backbones():
    """Every backbone tltool can fine-tune, as `BackboneSpec`s (static data: no TensorFlow)."""
    from tltool.workflows.planning import backbones as listed

    return listed()


def _paths(kwargs: dict) -> dict:
    """Path-like values (a Run, a pathlib.Path) as strings."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in kwargs.items()}
