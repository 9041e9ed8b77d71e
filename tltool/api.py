"""The Python API: what the command line does, as functions and a `Run` object.

    import tltool
    run = tltool.fit("data/", backbone="mobilenetv2", weights="imagenet")
    print(run.metrics["accuracy"], run.classes)
    folder, evaluation = tltool.evaluate(run, "more_data/")
    rows, skipped, classes = tltool.predict(run, ["photo.jpg"])
    model = run.load_model()           # the keras.Model, taking (N, S, S, 3) pixels 0-255

A `Run` is path-like, so it goes wherever a run directory's path does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    """A run directory written by `fit`."""

    dir: str

    def __fspath__(self) -> str:
        return self.dir

    def __str__(self) -> str:
        return self.dir

    @property
    def metrics(self) -> dict:
        """metrics.json: the report's figures and which weights were exported."""
        return self._json("metrics.json")

    @property
    def classes(self) -> list[str]:
        from tltool.runs.run import read_classes

        return read_classes(self.dir)

    @property
    def history(self):
        """history.csv as a pandas DataFrame: one row per epoch, all phases."""
        import pandas as pd

        return pd.read_csv(os.path.join(self.dir, "history.csv"))

    @property
    def recipe(self) -> dict:
        from tltool.runs.run import read_recipe

        return read_recipe(self.dir)

    def load_model(self):
        """The trained keras.Model (float32 (N, S, S, 3) RGB pixels 0-255 in, probabilities out)."""
        return load_model(self.dir)

    def evaluate(self, data: str, **kwargs):
        return evaluate(self, data, **kwargs)

    def predict(self, inputs: list[str], **kwargs):
        return predict(self, inputs, **kwargs)

    def export(self, fmt: str, out: str | None = None, **kwargs) -> str:
        return export(self, fmt, out, **kwargs)

    def _json(self, name: str) -> dict:
        with open(os.path.join(self.dir, name), encoding="utf-8") as f:
            return json.load(f)


def fit(data: str, **kwargs) -> Run:
    """Train on a folder of images; see `tltool.workflows.fitting.fit` for the arguments."""
    from tltool.workflows.fitting import fit as run_fit

    return Run(run_fit(data, **kwargs))


def lr_find(data: str, **kwargs):
    """(sweep, folder): the learning-rate range test; see `tltool.workflows.fitting.lr_find`."""
    from tltool.workflows.fitting import lr_find as run_lr_find

    return run_lr_find(data, **kwargs)


def open_run(path: str) -> Run:
    """A finished run directory as a `Run`."""
    from tltool.errors import TltoolError
    from tltool.runs.run import is_run_dir

    path = os.path.abspath(os.fspath(path))
    if not is_run_dir(path):
        raise TltoolError(f"{path}: not a tltool run directory")
    return Run(path)


def evaluate(model, data: str, **kwargs):
    """(evaluation folder, Evaluation); see `tltool.workflows.evaluating.evaluate`."""
    from tltool.workflows.evaluating import evaluate as run_evaluate

    return run_evaluate(os.fspath(model), data, **kwargs)


def predict(model, inputs: list[str], **kwargs):
    """(rows, skipped files, classes); see `tltool.workflows.predicting.predict`."""
    from tltool.workflows.predicting import predict as run_predict

    return run_predict(os.fspath(model), list(inputs), **kwargs)


def export(model, fmt: str, out: str | None = None, **kwargs) -> str:
    """Write `model` as savedmodel | keras | onnx | litert | litert-fp16 | litert-int8, checked;
    see `tltool.serving.writers.export`."""
    from tltool.serving.writers import export as run_export

    return run_export(os.fspath(model), fmt, out, **kwargs)


def load_model(path):
    """Load a run directory's model.keras (or a .keras file) with tltool's layers registered."""
    from tltool.serving.loading import load_trained

    model = load_trained(os.fspath(path)).keras_model
    if model is None:
        from tltool.errors import TltoolError

        raise TltoolError(f"{os.fspath(path)}: a SavedModel; load it with tf.saved_model.load")
    return model
