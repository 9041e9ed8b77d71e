"""Multi-label classification: zero or more classes per image, sigmoid, a threshold per class.

The head is a sigmoid per class, trained with binary cross-entropy. After
training, each class gets a temperature (calibration) and a threshold
tuned on the validation split (`tltool.evaluation.multilabel`); the
thresholds travel with the model (`metadata`, so every export carries them)
and make the decision everywhere: the served SavedModel, `predict`,
`evaluate`. A task object made by `decided` holds them.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tltool.data.scan import join_labels
from tltool.evaluation import plots
from tltool.evaluation.multilabel import (
    AVERAGED,
    DEFAULT_THRESHOLD,
    MIN_POSITIVES,
    apply_temperatures,
    binary_log_loss,
    evaluate_multilabel,
    fit_temperatures,
    format_per_class,
    pair_errors,
    tune_thresholds,
    worst_first,
)
from tltool.evaluation.report import ReportParts, Section
from tltool.files import write_csv
from tltool.recipe import IMBALANCE_THRESHOLD
from tltool.tasks.base import Task, mapped_class_weights

MAX_POSITIVE_WEIGHT = 10.0  # a very rare label would otherwise dominate the loss
CAPTIONS = {
    "precision_recall.png": "Precision-recall curves of the worst classes (by average precision); the dot is "
                            "the class's threshold.",
    "per_class_f1.png": "F1 per class at its threshold, worst at the top.",
    "most_wrong.png": "The images with the most wrong labels: true and predicted labels.",
}


class MultiLabel(Task):
    """Several labels per image, from a CSV's `labels` column or one-hot columns."""

    name = "multi-label"
    activation = "sigmoid"
    tuned_on_val = ("the exported epoch, each class's temperature and each class's threshold, and so micro-F1, "
                    "macro-F1, exact match and every figure at the thresholds")
    monitors = ("val_loss", "val_pr_auc")
    weights_in_loss = True
    several_labels = True

    def __init__(self, thresholds: list[float] | None = None):
        self.thresholds = thresholds

    def decided(self, decision: dict | None) -> "MultiLabel":
        return MultiLabel(decision["thresholds"]) if decision and decision.get("thresholds") else self

    def _thresholds(self, classes: int) -> np.ndarray:
        return np.asarray(self.thresholds if self.thresholds else [DEFAULT_THRESHOLD] * classes, dtype=float)

    # ------------------------------------------------------------ training

    def targets(self, labels: list, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        hot = np.zeros((len(labels), len(classes)), np.float32)
        for row, names in enumerate(labels):
            hot[row, [index[n] for n in names]] = 1.0
        return hot

    def encode(self, targets, num_classes: int):
        import tensorflow as tf

        return tf.cast(targets, tf.float32)

    def loss(self, recipe, weights: dict[int, float] | None = None):
        import keras

        if not weights:
            return keras.losses.BinaryCrossentropy(label_smoothing=recipe.label_smoothing)
        from tltool.training.losses import PositiveWeightedCrossentropy

        return PositiveWeightedCrossentropy([weights[i] for i in sorted(weights)], recipe.label_smoothing)

    def metrics(self) -> list:
        import keras

        # Keras' area under the interpolated PR curve (200 thresholds; 0 for a label without positives): close to
        # the report's mAP, but not it, so it has a name of its own.
        return [keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc")]

    def class_weights(self, recipe, dataset) -> dict[int, float] | None:
        """Per class, a weight on its positive examples in the loss (the negatives keep 1).

        `auto` weights only imbalanced labels (the most frequent label is in at
        least IMBALANCE_THRESHOLD times the training images of the rarest):
        each label's positives get negatives / positives, capped at
        MAX_POSITIVE_WEIGHT and never below 1. A mapping gives the weights.
        """
        if recipe.class_weight == "none":
            return None
        counts, images = dataset.counts()["train"], dataset.images()["train"]
        if recipe.class_weight == "auto":
            present = [counts[c] for c in dataset.classes if counts[c]]
            if max(present) < IMBALANCE_THRESHOLD * min(present):
                return None
            return {i: float(np.clip((images - counts[c]) / max(counts[c], 1), 1.0, MAX_POSITIVE_WEIGHT))
                    for i, c in enumerate(dataset.classes)}
        return mapped_class_weights(recipe, dataset)

    # ------------------------------------------------------------ after training

    def calibrate(self, probs: np.ndarray, targets: np.ndarray) -> dict | None:
        """A temperature per class, fitted on the validation split by binary log loss."""
        temperatures = fit_temperatures(probs, targets)
        after = apply_temperatures(probs, temperatures)
        return {"temperatures": [round(float(t), 6) for t in temperatures], "fitted_on": "val",
                "images": int(len(targets)), "val_log_loss_before": binary_log_loss(probs, targets),
                "val_log_loss_after": binary_log_loss(after, targets)}

    def describe_calibration(self, record: dict) -> str:
        t = record["temperatures"]
        return (f"a temperature per class ({min(t):.3f} to {max(t):.3f}) fitted on {record['images']} validation "
                f"images (validation log loss {record['val_log_loss_before']:.4f} -> "
                f"{record['val_log_loss_after']:.4f})")

    def calibrated(self, model, record: dict | None):
        if not record:
            return model
        import keras

        from tltool.models.layers import ClassTemperature

        return keras.Model(model.input, ClassTemperature(record["temperatures"], name="temperature")(model.output),
                           name=model.name)

    def decide(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """Per-class thresholds that maximise each class's F1 on the validation split (0.5 for a class with
        fewer than MIN_POSITIVES validation positives)."""
        thresholds = tune_thresholds(probs, targets)
        return {"thresholds": [round(float(t), 6) for t in thresholds], "tuned_on": "val",
                "min_positives": MIN_POSITIVES,
                "tuned": int((targets.sum(axis=0) >= MIN_POSITIVES).sum())}

    def describe_decision(self, decision: dict, classes: list[str]) -> str:
        shown = ", ".join(f"{c} {t:.2f}" for c, t in list(zip(classes, decision["thresholds"]))[:8])
        more = f", ... {len(classes) - 8} more" if len(classes) > 8 else ""
        kept = len(classes) - decision["tuned"]
        rest = f"; {kept} keep 0.5, having fewer than {MIN_POSITIVES} validation positives" if kept else ""
        return (f"a threshold per class, tuned on the validation split for F1 ({decision['tuned']} of {len(classes)} "
                f"classes{rest}): {shown}{more}")

    def decided_classes(self, probs: np.ndarray) -> list[list[int]]:
        """Every label at or above its threshold, most probable first."""
        above = probs >= self._thresholds(probs.shape[1])
        return [[int(i) for i in np.argsort(-p, kind="stable") if a[i]] for p, a in zip(probs, above)]

    def metadata(self) -> dict:
        return {"task": self.name, **({"thresholds": list(self.thresholds)} if self.thresholds else {})}

    # ------------------------------------------------------------ evaluation

    def evaluate(self, targets, probs: np.ndarray, classes: list[str], top_k: int = 5):
        return evaluate_multilabel(targets, probs, classes, self._thresholds(len(classes)))

    def headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in ("mean_average_precision", "micro_f1", "macro_f1", "exact_match")}

    def write_files(self, folder: str, evaluation, context) -> ReportParts:
        predictions = _prediction_table(evaluation, context.paths)
        pairs = pair_errors(evaluation)
        write_csv(os.path.join(folder, "per_class.csv"), evaluation.per_class)
        write_csv(os.path.join(folder, "predictions.csv"), predictions)
        write_csv(os.path.join(folder, "pair_errors.csv"), pairs)
        plots.precision_recall_png(evaluation, worst_first(evaluation.per_class)["class"].head(6).tolist(),
                                   os.path.join(folder, "precision_recall.png"))
        plots.per_class_f1_png(evaluation.per_class, os.path.join(folder, "per_class_f1.png"))
        wrong = predictions[predictions["wrong_labels"] > 0].sort_values("wrong_labels", ascending=False,
                                                                         kind="stable")
        plots.labels_gallery_png(wrong, context.data_root, os.path.join(folder, "most_wrong.png"),
                                 explain=context.explain)
        overview = []
        if context.calibration:
            overview.append(("calibration", self.describe_calibration(context.calibration)))
        if context.tta:
            t, plain = context.tta, evaluation.metrics
            overview.append(("test-time augmentation", f"{t['views']} views: mAP {t['mean_average_precision']:.4f} "
                             f"({t['mean_average_precision'] - plain['mean_average_precision']:+.4f}), micro-F1 "
                             f"{t['micro_f1']:.4f}, exact match {t['exact_match']:.4f}; the figures below are without "
                             "it, as the exported model serves"))
        absent = [c for c, n in zip(evaluation.classes, evaluation.per_class["support"]) if n == 0]
        overview.append(("averages", AVERAGED + (f"; left out: {', '.join(absent)}" if absent else "")))
        overview.append(("thresholds", f"per class, tuned on the validation split to maximise each class's F1 "
                         f"(0.5 where it has fewer than {MIN_POSITIVES} positives): "
                         + ", ".join(f"{c} {t:.2f}" for c, t in zip(evaluation.classes, evaluation.thresholds))))
        sections = [Section("Per class (worst first)", _formatted(worst_first(evaluation.per_class))),
                    Section("Most frequent pair errors", pairs.head(20), "No wrong labels.")]
        return ReportParts(sections, list(CAPTIONS.items()), overview,
                           ["per_class.csv", "predictions.csv", "pair_errors.csv"], curve="pr_auc")

    def render(self, evaluation, show_all: bool = False, tta: dict | None = None) -> str:
        m = evaluation.metrics
        keys = [k for k in m if k not in ("samples", "classes", "labels_averaged")]
        lines = [f"{m['samples']} images, {m['classes']} classes: " + ", ".join(f"{k} {m[k]:.4f}" for k in keys),
                 format_per_class(evaluation.per_class, None if show_all else 20)]
        if tta:
            lines.append(f"with test-time augmentation ({tta['views']} views): mean_average_precision "
                         f"{tta['mean_average_precision']:.4f}; the exported model serves without it")
        return "\n".join(lines)

    def compare(self, probs: np.ndarray, reference: np.ndarray, targets: np.ndarray) -> dict:
        classes = [str(i) for i in range(probs.shape[1])]
        mine, base = (self.evaluate(targets, p, classes).metrics["mean_average_precision"] for p in (probs, reference))
        thresholds = self._thresholds(probs.shape[1])
        return {"label_agreement": float(((probs >= thresholds) == (reference >= thresholds)).mean()),
                "max_probability_difference": float(np.abs(probs - reference).max()),
                "mean_average_precision": mine, "keras_mean_average_precision": base,
                "mean_average_precision_change": mine - base}

    def describe_comparison(self, figures: dict) -> str:
        return (f"label decisions agree with Keras on {100 * figures['label_agreement']:.1f}%, max probability "
                f"difference {figures['max_probability_difference']:.1e}; mAP {figures['mean_average_precision']:.4f} "
                f"({figures['mean_average_precision_change']:+.4f})")

    def comparison_failure(self, figures: dict, max_drop: float) -> str | None:
        drop = 100 * -figures["mean_average_precision_change"]
        return None if drop <= max_drop else (f"mAP {figures['mean_average_precision']:.4f} is {drop:.2f} points "
                                              f"below the Keras model's, more than --max-accuracy-drop {max_drop}")

    # ------------------------------------------------------------ serving and predict

    def serving_outputs(self, probs, names) -> dict:
        import tensorflow as tf

        decided = probs >= tf.constant(self._thresholds(int(names.shape[0])), probs.dtype)
        chosen = tf.where(decided, tf.broadcast_to(names, tf.shape(decided)), tf.zeros_like(decided, tf.string))
        joined = tf.strings.reduce_join(chosen, axis=-1, separator=";")  # ";" between names, as join_labels
        names = tf.strings.regex_replace(tf.strings.regex_replace(joined, ";+", "; "), "^; |; $", "")
        return {"probabilities": probs, "labels": decided, "label_names": names}

    def prediction_rows(self, paths: list[str], probs: np.ndarray, classes: list[str], top_k: int) -> pd.DataFrame:
        thresholds = self._thresholds(len(classes))
        chosen = [[(classes[c], float(p[c])) for c in np.argsort(-p, kind="stable") if p[c] >= thresholds[c]]
                  for p in probs]
        return pd.DataFrame({"path": paths, "labels": [[name for name, _ in row] for row in chosen],
                             "scores": [[score for _, score in row] for row in chosen],
                             "probabilities": [dict(zip(classes, map(float, p))) for p in probs]})

    def format_rows(self, rows: pd.DataFrame) -> list[str]:
        return [f"{r['path']}: " + (", ".join(f"{n} {100 * s:.1f}%" for n, s in zip(r["labels"], r["scores"]))
                                    or "no label") for _, r in rows.iterrows()]

    def json_rows(self, rows: pd.DataFrame) -> list[dict]:
        return [{"path": r["path"], "labels": list(r["labels"]), "probabilities": r["probabilities"]}
                for _, r in rows.iterrows()]

    def csv_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        table = pd.DataFrame({"path": rows["path"], "labels": [join_labels(names) for names in rows["labels"]]})
        probabilities = pd.DataFrame(list(rows["probabilities"]), index=table.index)
        return pd.concat([table, probabilities], axis=1)


def _prediction_table(evaluation, paths: list[str]) -> pd.DataFrame:
    classes, y, predicted = np.asarray(evaluation.classes, dtype=object), evaluation.targets.astype(bool), \
        evaluation.predicted
    return pd.DataFrame({
        "path": paths,
        "true": [join_labels(classes[row]) for row in y],
        "predicted": [join_labels(classes[row]) for row in predicted],
        "wrong_labels": (y != predicted).sum(axis=1),
        "probabilities": ["; ".join(f"{c}:{p:.3f}" for c, p in zip(classes, row)) for row in evaluation.probs],
    })


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: "-" if np.isnan(v) else f"{v:.3f}")
    return table
