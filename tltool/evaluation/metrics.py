"""Per-class and overall figures from predicted probabilities (scikit-learn -> pandas).

Computed after `predict`, outside the graph, so they are the same whether the
probabilities came from the Keras model, a SavedModel or a TFLite file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ECE_BINS = 15


@dataclass
class Evaluation:
    classes: list[str]
    y_true: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, C)
    k: int
    per_class: pd.DataFrame
    metrics: dict
    confusion: pd.DataFrame  # rows: true class, columns: predicted class
    task: str = "single-label"  # the task whose figures these are (`tltool.tasks`)

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def evaluate_probs(y_true, probs, classes: list[str], top_k: int = 5) -> Evaluation:
    """All figures for one evaluation.

    Args:
        y_true: true class index per sample.
        probs: predicted probabilities, one row per sample.
        classes: class names, in index order.
        top_k: k for top-k accuracy and recall (capped at the class count).
    """
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    k = max(1, min(top_k, len(classes)))
    in_top_k = _in_top_k(y_true, probs, k)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    topk_recall = [float(in_top_k[y_true == c].mean()) if support[c] else 0.0 for c in labels]
    per_class = pd.DataFrame({
        "class": classes, "precision": precision, "recall": recall, "f1": f1,
        "support": support.astype(int), f"top{k}_recall": topk_recall,
    })
    confusion = pd.DataFrame(confusion_matrix(y_true, y_pred, labels=labels), index=classes, columns=classes)
    present = support > 0
    metrics = {
        "samples": int(len(y_true)),
        "classes": len(classes),
        "accuracy": float((y_pred == y_true).mean()),
        f"top{k}_accuracy": float(in_top_k.mean()),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        **_averages(precision, recall, f1, support),
        "log_loss": float(log_loss(y_true, probs / probs.sum(axis=1, keepdims=True), labels=labels)),
        "expected_calibration_error": expected_calibration_error(y_true, probs),
    }
    return Evaluation(classes, y_true, probs, k, per_class, metrics, confusion)


def _averages(precision, recall, f1, support) -> dict:
    weights = support / support.sum() if support.sum() else np.zeros_like(support, dtype=float)
    present = support > 0
    out = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = float(values[present].mean()) if present.any() else 0.0
        out[f"weighted_{name}"] = float((values * weights).sum())
    return out


def _in_top_k(y_true: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == y_true[:, None]).any(axis=1)


def expected_calibration_error(y_true, probs, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def worst_first(per_class: pd.DataFrame) -> pd.DataFrame:
    """Classes sorted by F1 then recall, lowest first; absent classes last."""
    ranked = per_class.assign(_absent=per_class["support"] == 0)
    ranked = ranked.sort_values(["_absent", "f1", "recall", "class"], kind="stable")
    return ranked.drop(columns="_absent")


def format_per_class(per_class: pd.DataFrame, limit: int | None = 20) -> str:
    """The per-class table for a terminal, worst classes first."""
    from tltool.console import table

    ranked = worst_first(per_class)
    shown = ranked if limit is None or len(ranked) <= limit else ranked.head(limit)
    topk = [c for c in per_class.columns if c.startswith("top")]
    headers = ["class", "precision", "recall", "f1", "support", *topk]
    rows = [
        [r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", int(r["support"]),
         *[f"{r[c]:.3f}" for c in topk]]
        for _, r in shown.iterrows()
    ]
    text = table(rows, headers)
    if len(shown) < len(ranked):
        text += f"\n... {len(ranked) - len(shown)} more classes (the {len(shown)} worst shown; --all shows every class)"
    return text


def format_summary(metrics: dict) -> str:
    keys = [k for k in metrics if k not in ("samples", "classes", "labels_averaged")]
    parts = [f"{k} {metrics[k]:.4f}" for k in keys]
    return f"{metrics['samples']} images, {metrics['classes']} classes: " + ", ".join(parts)
