"""Report pictures, drawn with matplotlib's Figure API: nothing here touches pyplot or switches the backend
of a notebook that imports tltool.

Every figure stays readable from 2 to a few hundred classes: sizes grow with
the class count up to a cap, label fonts follow the space each class gets,
and only when that would fall below 5 pt are tick labels thinned.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MIN_FONT, MAX_FONT = 5.0, 10.0


def _figure(**kwargs):
    """A figure of its own (no pyplot state); `savefig` renders it with Agg whatever the session's backend."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, path: str) -> None:
    from tltool.files import atomic_path

    with atomic_path(path) as tmp:  # the temporary name keeps the .png ending
        fig.savefig(tmp, dpi=100)


def _label_layout(n: int, length_inches: float) -> tuple[int, float]:
    """(label every k-th class, font size in points) for n classes along an axis."""
    space = length_inches * 72 * 0.8 / max(n, 1)  # points per class; ~80% of the side is the axes
    size = min(MAX_FONT, 0.8 * space)
    if size >= MIN_FONT:
        return 1, size
    return math.ceil(MIN_FONT / (0.8 * space)), MIN_FONT


def _ticks(ax, classes: list[str], axis: str, length_inches: float) -> None:
    step, size = _label_layout(len(classes), length_inches)
    positions = np.arange(0, len(classes), step)
    labels = [classes[i] for i in positions]
    if axis == "x":
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=90, fontsize=size)
    else:
        ax.set_yticks(positions)
        ax.set_yticklabels(labels, fontsize=size)


def confusion_matrix_png(confusion: pd.DataFrame, path: str) -> None:
    """Raw counts and row-normalised (recall) side by side."""
    classes = list(confusion.index)
    n = len(classes)
    counts = confusion.values.astype(float)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(22, max(5, 0.16 * n + 3))
    fig = _figure(figsize=(2 * side + 1, side), constrained_layout=True)
    axes = fig.subplots(1, 2)
    for ax, values, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], normalised, "normalised by true class", ".2f")):
        image = ax.imshow(values, cmap="Blues", interpolation="nearest")
        ax.set_title(f"Confusion matrix ({title})")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        _ticks(ax, classes, "x", side)
        _ticks(ax, classes, "y", side)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        if n <= 25:
            top = values.max() or 1
            for i in range(n):
                for j in range(n):
                    text = format(int(values[i, j]), "d") if fmt == "d" else format(values[i, j], fmt)
                    ax.text(j, i, text, ha="center", va="center", fontsize=8,
                            color="white" if values[i, j] > top / 2 else "black")
    _save(fig, path)


def f1_axis(values) -> tuple[float, float]:
    """The F1 axis: from a round step below the worst class to 1, so 0.95 and 1.0 look different."""
    low = float(np.min(values)) if len(values) else 0.0
    return max(0.0, math.floor((low - 0.02) * 20) / 20), 1.0


def per_class_f1_png(per_class: pd.DataFrame, path: str) -> None:
    """Horizontal bars of F1 per class, worst at the top, each with its value."""
    import matplotlib

    ranked = per_class.sort_values("f1", ascending=False, kind="stable")
    n = len(ranked)
    height = min(40, max(3, 0.18 * n + 1))
    fig = _figure(figsize=(8, height), constrained_layout=True)
    ax = fig.subplots()
    values = ranked["f1"].to_numpy()
    colours = matplotlib.colormaps["RdYlGn"](values)
    ax.barh(np.arange(n), values, color=colours)
    _ticks(ax, ranked["class"].tolist(), "y", height)
    ax.set_ylim(-0.6, n - 0.4)
    low, high = f1_axis(values)
    ax.set_xlim(low, high)
    if n <= 60:
        _, size = _label_layout(n, height)
        for y, value in enumerate(values):
            ax.text(max(value, low) - 0.005 * (high - low), y, f"{value:.3f}", ha="right", va="center",
                    fontsize=size, color="black")
    ax.set_xlabel("F1")
    ax.set_title("F1 per class (worst at the top)")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def curves_png(history: pd.DataFrame, path: str, task_metric: str = "accuracy") -> None:
    """Loss and the task's training metric per epoch across phases, phase boundaries marked."""
    fig = _figure(figsize=(12, 4.5), constrained_layout=True)
    axes = fig.subplots(1, 2)
    epochs = history["epoch"].to_numpy()
    for ax, metric in zip(axes, ("loss", task_metric)):
        for column, style in ((metric, "-"), (f"val_{metric}", "--")):
            if column in history:
                ax.plot(epochs, history[column], style, marker="o", markersize=3,
                        label="validation" if column.startswith("val_") else "training")
        phases = history["phase"].tolist()
        for i in range(len(phases)):
            if i == 0 or phases[i] != phases[i - 1]:
                boundary = epochs[i] - 0.5
                ax.axvline(boundary, color="grey", alpha=0.5, linestyle=":")
                ax.text(boundary + 0.1, 0.98, phases[i], transform=ax.get_xaxis_transform(),
                        va="top", fontsize=8, color="dimgrey")
        _mark_exported(ax, history, metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def _mark_exported(ax, history: pd.DataFrame, metric: str) -> None:
    """A star on the epoch whose weights were exported (history's `exported` column)."""
    if "exported" not in history:
        return
    rows = history[history["exported"].fillna(False).astype(bool)]
    column = f"val_{metric}" if f"val_{metric}" in history else metric
    if len(rows) and column in history:
        ax.plot(rows["epoch"], rows[column], "*", color="crimson", markersize=14, label="exported weights")


def misclassified_png(rows: pd.DataFrame, root: str | None, path: str, limit: int = 16, explain=None) -> int:
    """A gallery of the most confident mistakes, each beside its heatmap when `explain` is given; returns how
    many are shown."""
    return _gallery(rows, root, path, limit, "Most confident mistakes",
                    lambda row: f"true: {row['true']}\npredicted: {row['predicted']} ({row['confidence']:.2f})", explain)


def labels_gallery_png(rows: pd.DataFrame, root: str | None, path: str, limit: int = 16, explain=None) -> int:
    """A gallery of the images with the most wrong labels (multi-label), with true and predicted labels, each
    beside the heatmap of its most probable label when `explain` is given."""
    return _gallery(rows, root, path, limit, "Images with the most wrong labels",
                    lambda row: f"true: {row['true'] or '-'}\npredicted: {row['predicted'] or '-'}", explain)


def _gallery(rows: pd.DataFrame, root: str | None, path: str, limit: int, title: str, caption, explain=None) -> int:
    """`explain` (`tltool.evaluation.gradcam.ImageExplainer`): each image shown beside its heatmap."""
    import os

    from tltool.data.images import ImageError, load_image

    shown = rows.head(limit)
    files = [r if os.path.isabs(r) or root is None else os.path.join(root, r) for r in shown["path"]]
    images = []
    for file in files:
        try:
            images.append(load_image(file, (128, 128)))
        except ImageError as e:
            images.append(f"cannot show:\n{e}")
    if explain is not None:
        images = _beside_heatmaps(explain, files, images)
    count = max(1, len(shown))
    cols = min(4, count)  # sized to what it shows: one mistake is one panel wide
    grid_rows = int(np.ceil(count / cols))
    fig = _figure(figsize=((5.4 if explain is not None else 3) * cols, 3.3 * grid_rows))
    axes = fig.subplots(grid_rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row), image in zip(axes.flat, shown.iterrows(), images):
        if isinstance(image, str):
            ax.text(0.5, 0.5, image, ha="center", va="center", fontsize=8)
        else:
            ax.imshow(image)
        ax.set_title(caption(row), fontsize=8)
    if shown.empty:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return len(shown)


def _beside_heatmaps(explain, files: list[str], images: list) -> list:
    """Each decoded image and, to its right, the same with its heatmap over it."""
    from tltool.evaluation.overlays import blend

    readable = [i for i, image in enumerate(images) if not isinstance(image, str)]
    heatmaps = explain.heatmaps([files[i] for i in readable], [images[i] for i in readable])
    shown = list(images)
    for i, heatmap in zip(readable, heatmaps):
        gap = np.full((images[i].shape[0], max(2, images[i].shape[1] // 20), 3), 255, np.uint8)
        shown[i] = np.concatenate([images[i], gap, blend(images[i], heatmap)], axis=1)
    return shown


def precision_recall_png(evaluation, classes: list[str], path: str) -> None:
    """Precision-recall curves of `classes` (multi-label), each with a dot at its threshold."""
    from sklearn.metrics import precision_recall_curve

    fig = _figure(figsize=(6, 5), constrained_layout=True)
    ax = fig.subplots()
    for name in classes:
        c = evaluation.classes.index(name)
        y, p = evaluation.targets[:, c], evaluation.probs[:, c]
        if not y.any():
            continue
        precision, recall, thresholds = precision_recall_curve(y, p)
        line, = ax.plot(recall, precision, label=f"{name} (AP {evaluation.per_class['average_precision'][c]:.2f})")
        at = min(np.searchsorted(thresholds, evaluation.thresholds[c]), len(thresholds) - 1)
        ax.plot(recall[at], precision[at], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall, worst classes")
    if ax.lines:
        ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    _save(fig, path)
