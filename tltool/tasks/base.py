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

from tltool.errors import TltoolError, did_you_mean


class Task(ABC):
    """The interface; `tltool.tasks.single_label.SingleLabel` is the reference implementation.

    Every method but `metadata` is abstract, so a task that misses one fails when it is made, not mid-run.
    """

    name: str = ""
    activation: str = "softmax"
    monitors: tuple[str, ...] = ("val_loss",)
    weights_in_loss: bool = False  # class weights go into the loss, not Keras' class_weight (multi-hot targets)
    several_labels: bool = False  # whether an image holds a tuple of labels (a multi-label CSV), not one
    # What `fit` tunes on the validation split; the report says it when it evaluates that split.
    tuned_on_val: str = "the exported epoch (early stopping, export_weights: best) and the calibration"

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
    def loss(self, recipe, weights: dict[int, float] | None = None):
        """The training loss; `weights` are `class_weights`' when `weights_in_loss`."""
        raise NotImplementedError

    @abstractmethod
    def metrics(self) -> list:
        """New Keras metric objects for one compile, not names: their variables then exist before the training
        step is traced, which TensorFlow would otherwise trace twice (`Session.compile_phase`)."""
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

    def decide(self, probs: np.ndarray, targets: np.ndarray) -> dict | None:
        """A decision rule tuned on the (calibrated) validation outputs, e.g. per-class thresholds; None: fixed."""
        return None

    def decided(self, decision: dict | None) -> "Task":
        """This task deciding by `decision` (what `decide` returned, or what a model file carries)."""
        return self

    def describe_decision(self, decision: dict, classes: list[str]) -> str:
        """One line about what `decide` tuned, for the log."""
        return str(decision)

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

    @abstractmethod
    def describe_comparison(self, figures: dict) -> str:
        """`compare`'s figures as the export check prints them."""
        raise NotImplementedError

    @abstractmethod
    def comparison_failure(self, figures: dict, max_drop: float) -> str | None:
        """Why the exported file fails its check (its headline figure dropped more than `max_drop` points), or None."""
        raise NotImplementedError

    # ------------------------------------------------------------ serving and predict

    @abstractmethod
    def serving_outputs(self, probs, names) -> dict:
        """What every SavedModel signature returns for a batch of probabilities (TensorFlow ops)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """What an exported file carries about the task beside the class names."""
        return {"task": self.name}

    def decided_classes(self, probs: np.ndarray) -> list[list[int]]:
        """The classes the model decides for each image (`explain` explains each); default: the most probable."""
        return [[int(i)] for i in np.argmax(probs, axis=1)]

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


def mapped_class_weights(recipe, dataset) -> dict[int, float]:
    """A recipe's `class_weight` mapping (class name -> weight; 1 for classes it leaves out), by class index.

    Raises:
        TltoolError: a class the dataset does not have.
    """
    unknown = [name for name in recipe.class_weight if name not in dataset.classes]
    if unknown:
        raise TltoolError(
            f"class_weight: no class {unknown[0]!r} in the dataset{did_you_mean(unknown[0], dataset.classes)}; "
            f"classes: {', '.join(dataset.classes)}")
    return {i: float(recipe.class_weight.get(c, 1.0)) for i, c in enumerate(dataset.classes)}
