"""Figures for several labels per image: per-class thresholds and temperatures, mAP, F1s, pair errors.

Everything works on arrays: ``targets`` (N, C) of 0/1 and ``probs`` (N, C)
of independent sigmoid probabilities, so the figures are the same whatever
runtime produced the probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MIN_POSITIVES = 5  # a class with fewer validation positives keeps the 0.5 threshold: its F1 curve is noise
DEFAULT_THRESHOLD = 0.5
ECE_BINS = 15
AVERAGED = "per-label averages (mAP, macro-F1) are over the labels present in the evaluated images"


@dataclass
class MultiLabelEvaluation:
    classes: list[str]
    targets: np.ndarray  # (N, C) 0/1
    probs: np.ndarray  # (N, C)
    thresholds: np.ndarray  # (C,)
    per_class: pd.DataFrame
    metrics: dict
    task: str = "multi-label"

    @property
    def predicted(self) -> np.ndarray:
        return self.probs >= self.thresholds


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, min_positives: int = MIN_POSITIVES) -> np.ndarray:
    """Per class, the threshold that maximises its F1 on (validation) `probs`.

    Candidates are the midpoints between consecutive distinct probabilities
    (and 0.5); ties go to the candidate closest to 0.5. A class with fewer than
    `min_positives` positives keeps 0.5. Every candidate's F1 comes from one
    `sklearn.metrics.precision_recall_curve`, in O(N log N) per class.
    """
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for c in range(probs.shape[1]):
        y = targets[:, c].astype(bool)
        if y.sum() >= min_positives:
            thresholds[c] = _best_threshold(y, probs[:, c])
    return thresholds


def _best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    precision, recall, values = precision_recall_curve(y, p, drop_intermediate=False)  # values ascending
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)[:len(values)]  # F1 of predicting p >= values[k]
    above_half = np.searchsorted(values, DEFAULT_THRESHOLD)  # 0.5 decides as the first value at or above it
    candidates = np.concatenate([(values[1:] + values[:-1]) / 2, [DEFAULT_THRESHOLD]])
    scores = np.concatenate([f1[1:], [f1[above_half] if above_half < len(values) else 0.0]])
    best = np.flatnonzero(scores == scores.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def fit_temperatures(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per class, the temperature T (logit / T) that minimises the binary log loss on (validation) `probs`."""
    from scipy.optimize import minimize_scalar

    logits = _logit(probs)
    temperatures = np.ones(probs.shape[1])
    for c in range(probs.shape[1]):
        y = targets[:, c]
        if y.min() == y.max():  # one kind of example only: any sharpening would only grow more certain
            continue
        found = minimize_scalar(lambda log_t, z=logits[:, c], y=y: binary_log_loss(_sigmoid(z / np.exp(log_t)), y),
                                bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        temperatures[c] = float(np.exp(found.x))
    return temperatures


def apply_temperatures(probs: np.ndarray, temperatures) -> np.ndarray:
    return _sigmoid(_logit(probs) / np.asarray(temperatures))


def binary_log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Binary expected calibration error: |frequency of positives - mean probability| over equal-width bins."""
    p, y = probs.ravel(), targets.ravel()
    which = np.clip(np.digitize(p, np.linspace(0, 1, bins + 1)[1:-1], right=True), 0, bins - 1)
    return float(sum((which == b).mean() * abs(y[which == b].mean() - p[which == b].mean())
                     for b in range(bins) if (which == b).any()))


def evaluate_multilabel(targets, probs: np.ndarray, classes: list[str], thresholds) -> MultiLabelEvaluation:
    """Every figure of one multi-label evaluation (scikit-learn's definitions).

    Every per-label average (mAP, macro-F1) is over the labels present in the evaluated images (`AVERAGED`): a
    label without a positive has no average precision, and its F1 would be 0 however right the model is.
    """
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = np.asarray(targets).astype(int)
    thresholds = np.asarray(thresholds, dtype=float)
    predicted = (probs >= thresholds).astype(int)
    present = y.sum(axis=0) > 0
    ap = np.array([average_precision_score(y[:, c], probs[:, c]) if present[c] else np.nan
                   for c in range(len(classes))])
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, average=None, zero_division=0.0,
                                                               labels=range(len(classes)))
    per_class = pd.DataFrame({
        "class": classes, "average_precision": ap, "precision": precision, "recall": recall, "f1": f1,
        "threshold": thresholds, "support": y.sum(axis=0),
        "calibration_error": [calibration_error(probs[:, c], y[:, c]) for c in range(len(classes))]})
    metrics = {
        "samples": int(len(y)), "classes": len(classes), "labels_averaged": int(present.sum()),
        "mean_average_precision": float(np.nanmean(ap)) if present.any() else 0.0,
        "micro_average_precision": float(average_precision_score(y.ravel(), probs.ravel())) if y.any() else 0.0,
        "micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "samples_f1": float(f1_score(y, predicted, average="samples", zero_division=1.0)),
        "exact_match": float((predicted == y).all(axis=1).mean()),
        "hamming_loss": float(hamming_loss(y, predicted)),
        "label_cardinality_true": float(y.sum(axis=1).mean()),
        "label_cardinality_predicted": float(predicted.sum(axis=1).mean()),
        "log_loss": binary_log_loss(probs, y),
        "expected_calibration_error": calibration_error(probs, y),
    }
    return MultiLabelEvaluation(list(classes), y, probs, thresholds, per_class, metrics)


def pair_errors(evaluation: MultiLabelEvaluation) -> pd.DataFrame:
    """The most frequent mistakes as pairs: a label predicted that is absent while another is present
    (``false positive`` ``when`` ``present``), and a present label missed (``false negative``), with counts."""
    y, predicted, classes = evaluation.targets.astype(bool), evaluation.predicted, evaluation.classes
    rows = []
    for wrong, kind in ((predicted & ~y, "false positive"), (~predicted & y, "false negative")):
        for i, j in zip(*np.nonzero(wrong)):
            for k in np.flatnonzero(y[i]):
                if k != j:
                    rows.append((kind, classes[j], classes[k]))
    table = pd.DataFrame(rows, columns=["error", "label", "while present"])
    if table.empty:
        return table.assign(count=pd.Series(dtype=int))
    counted = table.value_counts().rename("count").reset_index()
    return counted.sort_values(["count", "error", "label", "while present"], ascending=[False, True, True, True],
                               kind="stable")


def worst_first(per_class: pd.DataFrame) -> pd.DataFrame:
    """Classes by average precision then F1, lowest first; classes absent from the split last."""
    ranked = per_class.assign(_absent=per_class["support"] == 0)
    return ranked.sort_values(["_absent", "average_precision", "f1", "class"], kind="stable").drop(columns="_absent")


def format_per_class(per_class: pd.DataFrame, limit: int | None = 20) -> str:
    from tltool.console import table

    ranked = worst_first(per_class)
    shown = ranked if limit is None or len(ranked) <= limit else ranked.head(limit)
    rows = [[r["class"], _fixed(r["average_precision"]), _fixed(r["precision"]), _fixed(r["recall"]),
             _fixed(r["f1"]), f"{r['threshold']:.2f}", int(r["support"])] for _, r in shown.iterrows()]
    text = table(rows, ["class", "AP", "precision", "recall", "f1", "threshold", "support"])
    if len(shown) < len(ranked):
        text += f"\n... {len(ranked) - len(shown)} more classes (the {len(shown)} worst shown; --all shows every class)"
    return text


def _fixed(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.3f}"
