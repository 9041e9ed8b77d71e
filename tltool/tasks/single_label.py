"""Single-label classification: one class per image, softmax, argmax, temperature scaling."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tltool.evaluation import plots
from tltool.evaluation.metrics import evaluate_probs, format_per_class, format_summary, worst_first
from tltool.evaluation.report import ReportParts, Section
from tltool.files import write_atomic, write_csv
from tltool.recipe import IMBALANCE_THRESHOLD
from tltool.tasks.base import Task, mapped_class_weights

CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix: counts, and normalised by true class (the diagonal is recall).",
    "per_class_f1.png": "F1 per class, worst at the top.",
    "misclassified.png": "The most confident mistakes: candidates for mislabelled images (beside each, where the "
                         "model looked for the class it predicted: Grad-CAM, red is hottest).",
}


class SingleLabel(Task):
    """One label per image, from class folders or a CSV's `label` column."""

    name = "single-label"
    activation = "softmax"
    monitors = ("val_loss", "val_accuracy")

    # ------------------------------------------------------------ training

    def targets(self, labels: list, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index[label] for label in labels], np.int32)

    def encode(self, targets, num_classes: int):
        import tensorflow as tf

        return tf.one_hot(targets, num_classes)

    def loss(self, recipe, weights: dict[int, float] | None = None):
        import keras

        return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)

    def metrics(self) -> list:
        import keras

        return [keras.metrics.CategoricalAccuracy(name="accuracy")]

    def class_weights(self, recipe, dataset) -> dict[int, float] | None:
        """Inverse-frequency weights (`auto`), an explicit mapping, or None.

        `auto` weights only imbalanced training data (the largest class has at
        least IMBALANCE_THRESHOLD times the images of the smallest): on
        balanced data, weights only add noise to the loss.
        """
        if recipe.class_weight == "none":
            return None
        counts = dataset.counts()["train"]
        if recipe.class_weight == "auto":
            present = [counts[c] for c in dataset.classes if counts[c]]
            if max(present) < IMBALANCE_THRESHOLD * min(present):
                return None
            total, n = sum(counts.values()), len(dataset.classes)
            return {i: total / (n * counts[c]) for i, c in enumerate(dataset.classes) if counts[c]}
        return mapped_class_weights(recipe, dataset)

    # ------------------------------------------------------------ after training

    def calibrate(self, probs: np.ndarray, targets: np.ndarray) -> dict | None:
        """A temperature fitted on the validation split (`tltool.training.calibration`)."""
        from tltool.training.calibration import apply_temperature, fit_temperature, negative_log_likelihood

        labels = np.asarray(targets, np.int64)
        temperature = fit_temperature(probs, labels)
        before = negative_log_likelihood(probs, labels)
        after = negative_log_likelihood(apply_temperature(probs, temperature), labels) if temperature != 1.0 \
            else before
        return {"temperature": round(temperature, 6), "fitted_on": "val", "images": int(len(labels)),
                "val_log_loss_before": before, "val_log_loss_after": after}

    def describe_calibration(self, record: dict) -> str:
        return (f"temperature {record['temperature']:.3f} fitted on {record['images']} validation images "
                f"(validation log loss {record['val_log_loss_before']:.4f} -> {record['val_log_loss_after']:.4f})")

    def calibrated(self, model, record: dict | None):
        if not record:
            return model
        import keras

        from tltool.models.layers import Temperature

        return keras.Model(model.input, Temperature(record["temperature"], name="temperature")(model.output),
                           name=model.name)

    # ------------------------------------------------------------ evaluation

    def evaluate(self, targets, probs: np.ndarray, classes: list[str], top_k: int = 5):
        return evaluate_probs(targets, probs, classes, top_k)

    def headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in ("accuracy", "macro_f1", "log_loss", "expected_calibration_error")}

    def write_files(self, folder: str, evaluation, context) -> ReportParts:
        predictions = prediction_table(evaluation, context.paths)
        mistakes = predictions[~predictions["correct"]].sort_values("confidence", ascending=False, kind="stable")
        confused = most_confused(evaluation.confusion)
        write_csv(os.path.join(folder, "per_class.csv"), evaluation.per_class)
        write_atomic(os.path.join(folder, "confusion_matrix.csv"),
                     evaluation.confusion.to_csv(index_label="true/predicted"))
        write_csv(os.path.join(folder, "predictions.csv"), predictions)
        write_csv(os.path.join(folder, "misclassified.csv"), mistakes)
        write_csv(os.path.join(folder, "most_confused.csv"), confused)
        plots.confusion_matrix_png(evaluation.confusion, os.path.join(folder, "confusion_matrix.png"))
        plots.per_class_f1_png(evaluation.per_class, os.path.join(folder, "per_class_f1.png"))
        plots.misclassified_png(mistakes, context.data_root, os.path.join(folder, "misclassified.png"),
                                explain=context.explain)
        overview = []
        if context.calibration:
            overview.append(("calibration", self.describe_calibration(context.calibration)))
        if context.tta:
            t, accuracy = context.tta, evaluation.metrics["accuracy"]
            overview.append(("test-time augmentation", f"{t['views']} views: accuracy {t['accuracy']:.4f} "
                             f"({t['accuracy'] - accuracy:+.4f}), macro F1 {t['macro_f1']:.4f}; "
                             "the figures below are without it, as the exported model serves"))
        sections = [Section("Per class (worst first)", _per_class_frame(evaluation)),
                    Section("Most confused pairs", confused.head(20), "No mistakes.")]
        return ReportParts(sections, [(name, caption) for name, caption in CAPTIONS.items()], overview,
                           ["per_class.csv", "confusion_matrix.csv", "predictions.csv", "misclassified.csv",
                            "most_confused.csv"])

    def render(self, evaluation, show_all: bool = False, tta: dict | None = None) -> str:
        lines = [format_summary(evaluation.metrics), format_per_class(evaluation.per_class, None if show_all else 20)]
        if tta:
            lines.append(f"with test-time augmentation ({tta['views']} views): accuracy {tta['accuracy']:.4f} "
                         f"({tta['accuracy'] - evaluation.metrics['accuracy']:+.4f}), macro_f1 "
                         f"{tta['macro_f1']:.4f}; the exported model serves without it")
        return "\n".join(lines)

    def compare(self, probs: np.ndarray, reference: np.ndarray, targets: np.ndarray) -> dict:
        labels = np.asarray(targets)
        right, base = probs.argmax(1) == labels, reference.argmax(1) == labels
        return {"top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
                "max_probability_difference": float(np.abs(probs - reference).max()),
                "accuracy": float(right.mean()), "keras_accuracy": float(base.mean()),
                "accuracy_change": float(right.mean() - base.mean()), "images_lost": int(base.sum() - right.sum())}

    def describe_comparison(self, figures: dict) -> str:
        return (f"top-1 agrees with Keras on {100 * figures['top1_agreement']:.1f}%, max probability difference "
                f"{figures['max_probability_difference']:.1e}; accuracy {100 * figures['accuracy']:.2f}% "
                f"({100 * figures['accuracy_change']:+.2f} points)")

    def comparison_failure(self, figures: dict, max_drop: float) -> str | None:
        drop, lost = 100 * (figures["keras_accuracy"] - figures["accuracy"]), figures["images_lost"]
        if drop > max_drop and lost >= 2:  # one image is noise on a small split
            return (f"accuracy {100 * figures['accuracy']:.2f}% is {drop:.2f} points below the Keras model's "
                    f"({lost} images), more than --max-accuracy-drop {max_drop}")
        return None

    # ------------------------------------------------------------ serving and predict

    def serving_outputs(self, probs, names) -> dict:
        import tensorflow as tf

        ids = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {"probabilities": probs, "class_id": ids, "class_name": tf.gather(names, ids),
                "score": tf.reduce_max(probs, axis=-1)}

    def prediction_rows(self, paths: list[str], probs: np.ndarray, classes: list[str], top_k: int) -> pd.DataFrame:
        k = max(1, min(top_k, len(classes)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        data = {"path": paths, "predicted": [classes[o[0]] for o in order],
                "confidence": probs[np.arange(len(paths)), order[:, 0]],
                "probabilities": [dict(zip(classes, map(float, p))) for p in probs]}
        for j in range(k):
            data[f"top{j + 1}"] = [classes[o[j]] for o in order]
            data[f"top{j + 1}_probability"] = probs[np.arange(len(paths)), order[:, j]]
        return pd.DataFrame(data)

    def format_rows(self, rows: pd.DataFrame) -> list[str]:
        k = _top_k(rows)
        return [f"{r['path']}: " + ", ".join(f"{r[f'top{j}']} {100 * r[f'top{j}_probability']:.1f}%"
                                              for j in range(1, k + 1)) for _, r in rows.iterrows()]

    def json_rows(self, rows: pd.DataFrame) -> list[dict]:
        k = _top_k(rows)
        return [{"path": r["path"],
                 "top": [{"class": r[f"top{j}"], "probability": float(r[f"top{j}_probability"])}
                         for j in range(1, k + 1)],
                 "probabilities": r["probabilities"]} for _, r in rows.iterrows()]

    def csv_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows.drop(columns="probabilities")


def _top_k(rows: pd.DataFrame) -> int:
    return sum(1 for c in rows.columns if c.startswith("top") and not c.endswith("probability"))


def prediction_table(evaluation, paths: list[str]) -> pd.DataFrame:
    """One row per evaluated image: path, true, predicted, confidence, correct, top-k."""
    classes = np.asarray(evaluation.classes, dtype=object)
    order = np.argsort(-evaluation.probs, axis=1, kind="stable")[:, : evaluation.k]
    top = ["; ".join(f"{classes[j]}:{p[j]:.3f}" for j in row) for row, p in zip(order, evaluation.probs)]
    predicted = evaluation.y_pred
    return pd.DataFrame({
        "path": paths,
        "true": classes[evaluation.y_true],
        "predicted": classes[predicted],
        "confidence": evaluation.probs[np.arange(len(predicted)), predicted],
        "correct": predicted == evaluation.y_true,
        f"top{evaluation.k}": top,
    })


def most_confused(confusion: pd.DataFrame) -> pd.DataFrame:
    """(true, predicted, count) for every off-diagonal cell with mistakes, most first."""
    counts = confusion.values.copy()
    np.fill_diagonal(counts, 0)
    rows = [(confusion.index[i], confusion.columns[j], int(counts[i, j])) for i, j in zip(*np.nonzero(counts))]
    table = pd.DataFrame(rows, columns=["true", "predicted", "count"])
    return table.sort_values(["count", "true", "predicted"], ascending=[False, True, True], kind="stable")


def _per_class_frame(evaluation) -> pd.DataFrame:
    table = worst_first(evaluation.per_class).copy()
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: f"{v:.3f}")
    return table
