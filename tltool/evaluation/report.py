"""Writing an evaluation: tables, pictures, report.md and a self-contained report.html.

`fit` (for its own validation/test split) and `evaluate` (for any dataset)
write the same set of files:

    per_class.csv  metrics.json  confusion_matrix.csv  predictions.csv
    misclassified.csv  most_confused.csv  confusion_matrix.png  per_class_f1.png
    misclassified.png  curves.png (when there is a training history)
    report.md  report.html
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tltool.evaluation import plots
from tltool.files import write_atomic, write_csv, write_json
from tltool.evaluation.metrics import Evaluation, worst_first

PICTURES = ("confusion_matrix.png", "per_class_f1.png", "curves.png", "misclassified.png")


@dataclass
class ReportContext:
    """What the report says about where the figures come from."""

    title: str
    model: str
    split: str
    data_root: str
    paths: list[str]  # per evaluated image, relative to data_root (or absolute)
    recipe: dict | None = None
    history: pd.DataFrame | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    exported: dict | None = None  # which phase and epoch the evaluated weights come from
    calibration: dict | None = None  # the temperature fitted after training
    tta: dict | None = None  # figures with test-time augmentation, beside the plain ones


def prediction_table(evaluation: Evaluation, paths: list[str]) -> pd.DataFrame:
    """One row per image: path, true, predicted, confidence, correct, top-k."""
    classes = np.asarray(evaluation.classes, dtype=object)
    order = np.argsort(-evaluation.probs, axis=1, kind="stable")[:, : evaluation.k]
    top = [" ".join(f"{classes[j]}:{p[j]:.3f}" for j in row) for row, p in zip(order, evaluation.probs)]
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


def write_evaluation(folder: str, evaluation: Evaluation, context: ReportContext) -> list[str]:
    """Every file of an evaluation into `folder`; returns their names."""
    predictions = prediction_table(evaluation, context.paths)
    mistakes = predictions[~predictions["correct"]].sort_values("confidence", ascending=False, kind="stable")
    confused = most_confused(evaluation.confusion)
    write_csv(os.path.join(folder, "per_class.csv"), evaluation.per_class)
    extra = {key: value for key, value in (("exported", context.exported), ("calibration", context.calibration),
                                           ("tta", context.tta)) if value}
    write_json(os.path.join(folder, "metrics.json"), {"split": context.split, **evaluation.metrics, **extra})
    write_atomic(os.path.join(folder, "confusion_matrix.csv"),
                 evaluation.confusion.to_csv(index_label="true/predicted"))
    write_csv(os.path.join(folder, "predictions.csv"), predictions)
    write_csv(os.path.join(folder, "misclassified.csv"), mistakes)
    write_csv(os.path.join(folder, "most_confused.csv"), confused)
    pictures = _pictures(folder, evaluation, context, mistakes)
    write_atomic(os.path.join(folder, "report.md"), _markdown(evaluation, context, confused, pictures))
    write_atomic(os.path.join(folder, "report.html"), _html(folder, evaluation, context, confused, pictures))
    return sorted(os.listdir(folder))


def _pictures(folder, evaluation, context, mistakes) -> list[str]:
    made = []
    plots.confusion_matrix_png(evaluation.confusion, os.path.join(folder, "confusion_matrix.png"))
    made.append("confusion_matrix.png")
    plots.per_class_f1_png(evaluation.per_class, os.path.join(folder, "per_class_f1.png"))
    made.append("per_class_f1.png")
    if context.history is not None and not context.history.empty:
        plots.curves_png(context.history, os.path.join(folder, "curves.png"))
        made.append("curves.png")
    plots.misclassified_png(mistakes, context.data_root, os.path.join(folder, "misclassified.png"))
    made.append("misclassified.png")
    return made


# ---------------------------------------------------------------- report text

_CAPTIONS = {
    "confusion_matrix.png": "Confusion matrix: counts, and normalised by true class (the diagonal is recall).",
    "per_class_f1.png": "F1 per class, worst at the top.",
    "curves.png": "Loss and accuracy per epoch; dotted lines mark the start of each phase.",
    "misclassified.png": "The most confident mistakes: candidates for mislabelled images.",
}


def _overview(evaluation: Evaluation, context: ReportContext) -> list[tuple[str, str]]:
    items = [("model", context.model), ("evaluated on", f"{context.data_root} ({context.split}): "
             f"{evaluation.metrics['samples']} images, {evaluation.metrics['classes']} classes")]
    if context.exported:
        from tltool.training.session import describe_exported

        items.append(("weights", f"{describe_exported(context.exported)}, by export_weights: "
                      f"{context.exported['rule']}"))
    if context.calibration:
        c = context.calibration
        items.append(("calibration", f"temperature {c['temperature']:.3f} fitted on {c['images']} validation "
                      f"images (their log loss {c['val_log_loss_before']:.4f} -> {c['val_log_loss_after']:.4f})"))
    if context.tta:
        t = context.tta
        items.append(("test-time augmentation", f"{t['views']} views: accuracy {t['accuracy']:.4f} "
                      f"({t['accuracy'] - evaluation.metrics['accuracy']:+.4f}), macro F1 {t['macro_f1']:.4f}; "
                      "the figures below are without it, as the exported model serves"))
    if context.unreadable:
        items.append(("not evaluated", f"{len(context.unreadable)} file(s) could not be read: "
                      + "; ".join(f"{p}: {r}" for p, r in context.unreadable[:10])))
    recipe = context.recipe
    if recipe:
        phases = ", ".join(f"{p['name']} ({p['epochs']} ep, trainable {_trainable(p['trainable'])})"
                           for p in recipe.get("phases", []))
        items.append(("recipe", f"{recipe.get('name')}: {recipe.get('description', '')}"))
        items.append(("backbone", f"{recipe.get('backbone')}, {recipe.get('image_size')} px, weights "
                      f"{recipe.get('weights')}, aspect {recipe.get('data', {}).get('aspect', 'stretch')}"))
        items.append(("phases", phases))
    return items


def _trainable(value) -> str:
    if isinstance(value, dict):
        key, val = next(iter(value.items()))
        return f"{key}={val}"
    return str(value)


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    return [(k.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]


def _per_class_frame(evaluation: Evaluation) -> pd.DataFrame:
    table = worst_first(evaluation.per_class).copy()
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: f"{v:.3f}")
    return table


def _md_table(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in frame.values]
    lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join("---" for _ in cells[0]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _markdown(evaluation, context, confused, pictures) -> str:
    out = [f"# {context.title}", ""]
    out += [f"- **{k}**: {v}" for k, v in _overview(evaluation, context)]
    out += ["", "## Overall", "", _md_table(pd.DataFrame(_metric_rows(evaluation.metrics), columns=["metric", "value"]))]
    out += ["", "## Per class (worst first)", "", _md_table(_per_class_frame(evaluation))]
    out += ["", "## Most confused pairs", ""]
    out += [_md_table(confused.head(20)) if not confused.empty else "No mistakes."]
    out += ["", "## Pictures", ""]
    for name in pictures:
        out += [f"![{name}]({name})", "", f"*{_CAPTIONS[name]}*", ""]
    out += ["Files: per_class.csv, metrics.json, confusion_matrix.csv, predictions.csv, misclassified.csv, "
            "most_confused.csv.", ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:90%;margin-bottom:2em}dt{font-weight:bold}dd{margin:0 0 .5em 1em}"""


def _html(folder, evaluation, context, confused, pictures) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(context.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(context.title)}</h1><dl>"]
    parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in _overview(evaluation, context)]
    parts.append("</dl><h2>Overall</h2>")
    parts.append(pd.DataFrame(_metric_rows(evaluation.metrics), columns=["metric", "value"]).to_html(index=False))
    parts.append("<h2>Per class (worst first)</h2>" + _per_class_frame(evaluation).to_html(index=False))
    parts.append("<h2>Most confused pairs</h2>")
    parts.append(confused.head(20).to_html(index=False) if not confused.empty else "<p>No mistakes.</p>")
    parts.append("<h2>Pictures</h2>")
    for name in pictures:
        with open(os.path.join(folder, name), "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(_CAPTIONS[name])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
