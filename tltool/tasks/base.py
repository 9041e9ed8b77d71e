"""The Task seam: what a kind of prediction means, from the head's activation to how `predict` prints.

keras-hub splits a model into a Backbone and a Task; tltool does the same.
The backbone source (`tltool.models.backbone`) says how features are made;
a Task says what the outputs mean:

- the head's activation, the loss and the training metrics;
- how labels become training targets, and class weighting;
- the decision rule (argmax for one label per image);
- calibration after training;
- the evaluation figures, report files and terminal summary;
- what the served SavedModel returns, and what an export carries;
- the rows `predict` writes and prints.

Training, serving and evaluation receive a Task object and never import a
concrete one; the table in `tltool.tasks` picks it. A new task is one module
that subclasses `Task`, and one entry in that table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Task(ABC):
    """The interface; `tltool.tasks.single_label.SingleLabel` is the reference implementation.

    Every method but `metadata` is abstract, so a task that misses one fails when it is made, not mid-run.
    """

    name: str = ""
    activation: str = "softmax"
    monitors: tuple[str, ...] = ("val_loss",)

    # ------------------------------------------------------------ training

    @abstractmethod
    def targets(self, labels: list, classes: list[str]) -> np.ndarray:
        """Per sample, what the pipeline carries: a class index, or a vector."""
        raise NotImplementedError

    @abstractmethod
    def encode(self, targets, num_classes: int):
        """Batched targets (a tf tensor) -> what the loss takes."""
        raise NotImplementedError

    @abstractmethod
    def loss(self, recipe):
        raise NotImplementedError

    @abstractmethod
    def metrics(self) -> list:
        raise NotImplementedError

    @abstractmethod
    def class_weights(self, recipe, dataset):
        """Keras `class_weight` for the training split, or None."""
        raise NotImplementedError

    # ------------------------------------------------------------ after training

    @abstractmethod
    def calibrate(self, probs: np.ndarray, targets: np.ndarray) -> dict | None:
        """Fit the calibration on validation outputs; the record metrics.json keeps, or None."""
        raise NotImplementedError

    @abstractmethod
    def describe_calibration(self, record: dict) -> str:
        """One line about a calibration record, for the log and the report."""
        raise NotImplementedError

    @abstractmethod
    def calibrated(self, model, record: dict | None):
        """The model whose outputs go through `record`'s calibration (the same model without one)."""
        raise NotImplementedError

    # ------------------------------------------------------------ evaluation

    @abstractmethod
    def evaluate(self, targets, probs: np.ndarray, classes: list[str], top_k: int = 5):
        """Every figure of one evaluation; the object has `.metrics` (a dict) and `.per_class` (a DataFrame)."""
        raise NotImplementedError

    @abstractmethod
    def headline(self, metrics: dict) -> dict:
        """The few figures to quote beside test-time augmentation and in summaries."""
        raise NotImplementedError

    @abstractmethod
    def write_files(self, folder: str, evaluation, context):
        """The task's tables and pictures into `folder`; returns `tltool.evaluation.report.ReportParts`."""
        raise NotImplementedError

    @abstractmethod
    def render(self, evaluation, show_all: bool = False, tta: dict | None = None) -> str:
        """The evaluation as terminal text (with `tta`: the test-time-augmentation figures metrics.json holds)."""
        raise NotImplementedError

    @abstractmethod
    def compare(self, probs: np.ndarray, reference: np.ndarray, targets: np.ndarray) -> dict:
        """An exported file's outputs against the Keras model's: agreement and the headline figure of each."""
        raise NotImplementedError

    # ------------------------------------------------------------ serving and predict

    @abstractmethod
    def serving_outputs(self, probs, names) -> dict:
        """What every SavedModel signature returns for a batch of probabilities (TensorFlow ops)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """What an exported file carries about the task beside the class names."""
        return {"task": self.name}

    @abstractmethod
    def prediction_rows(self, paths: list[str], probs: np.ndarray, classes: list[str], top_k: int):
        """One row per image: the DataFrame `predict` returns."""
        raise NotImplementedError

    @abstractmethod
    def format_rows(self, rows) -> list[str]:
        """`predict`'s terminal lines."""
        raise NotImplementedError

    @abstractmethod
    def json_rows(self, rows) -> list[dict]:
        """`predict --output X.json`'s entries."""
        raise NotImplementedError

    @abstractmethod
    def csv_rows(self, rows):
        """`predict --output X.csv`'s table."""
        raise NotImplementedError
