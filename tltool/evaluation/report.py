"""Writing an evaluation's report: metrics.json, curves.png, report.md and a self-contained report.html.

`fit` (for its own validation/test split) and `evaluate` (for any dataset)
write the same files. The task (`tltool.tasks`) writes its own tables and
pictures first and hands over `ReportParts`: its sections, pictures and
overview lines; this module adds what every report has (where the figures
come from, the training curves) and renders both documents.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field

import pandas as pd

from tltool.evaluation import plots
from tltool.files import write_atomic, write_json


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
    calibration: dict | None = None  # what the task fitted after training
    tta: dict | None = None  # figures with test-time augmentation, beside the plain ones
    explain: object | None = None  # heatmaps for the gallery of mistakes (`tltool.evaluation.gradcam.ImageExplainer`)
    leaked: int = 0  # evaluated images with a copy in an earlier split (`tltool.data.duplicates.leaks`)
    tuned_here: str | None = None  # what the run tuned on the images evaluated here (fit's val), said in one line


@dataclass
class Section:
    """One part of a report: a heading, a table, and the text shown when the table is empty."""

    title: str
    table: pd.DataFrame | None = None
    empty: str = ""


@dataclass
class ReportParts:
    """What a task contributes to a report.

    Attributes:
        sections: its tables, in order.
        pictures: (file name in the folder, caption) of the pictures it drew.
        overview: extra (label, text) lines for the report's head.
        files: the data files it wrote, named in the report.
        curve: the training metric that curves.png plots beside the loss (a name in history.csv).
    """

    sections: list[Section]
    pictures: list[tuple[str, str]]
    overview: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    curve: str = "accuracy"


CURVES = ("curves.png", "Loss and the training metric per epoch; dotted lines mark the start of each phase.")


def write_report(folder: str, metrics: dict, parts: ReportParts, context: ReportContext) -> list[str]:
    """metrics.json, curves.png (with a history) and both reports into `folder`; returns the folder's files."""
    extra = {key: value for key, value in (("exported", context.exported), ("calibration", context.calibration),
                                           ("tta", context.tta)) if value}
    write_json(os.path.join(folder, "metrics.json"), {"split": context.split, **metrics, **extra})
    pictures = list(parts.pictures)
    if context.history is not None and not context.history.empty:
        plots.curves_png(context.history, os.path.join(folder, CURVES[0]), parts.curve)
        pictures.insert(min(2, len(pictures)), CURVES)
    overview = _overview(metrics, context, parts)
    write_atomic(os.path.join(folder, "report.md"), _markdown(metrics, context, parts, overview, pictures))
    write_atomic(os.path.join(folder, "report.html"), _html(folder, metrics, context, parts, overview, pictures))
    return sorted(os.listdir(folder))


def describe_exported(exported: dict) -> str:
    """'phase 'head' epoch 4 (best val_loss 0.1234)' for logs and reports."""
    text = f"phase {exported['phase']!r} epoch {exported['epoch']}"
    if exported.get("value") is not None and exported.get("monitor"):
        kind = "best" if exported["rule"] == "best" else "last"
        text += f" ({kind} {exported['monitor']} {exported['value']:.4f})"
    return text


def _overview(metrics: dict, context: ReportContext, parts: ReportParts) -> list[tuple[str, str]]:
    items = [("model", context.model), ("evaluated on", f"{context.data_root} ({context.split}): "
             f"{metrics['samples']} images, {metrics['classes']} classes")]
    if context.exported:
        items.append(("weights", f"{describe_exported(context.exported)}, by export_weights: "
                      f"{context.exported['rule']}"))
    items += parts.overview
    if context.tuned_here:
        items.append(("tuned on these images", f"{context.tuned_here} were chosen on this split, so those figures "
                      "are optimistic; a test split (data: {test_split: 0.15}) gives figures that are not"))
    if context.leaked:
        items.append(("leakage", f"{context.leaked} of the {metrics['samples']} images evaluated here have a copy "
                      "in an earlier split (data/leakage.csv): these figures are optimistic"))
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


def _metric_table(metrics: dict) -> pd.DataFrame:
    rows = [(k.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]
    return pd.DataFrame(rows, columns=["metric", "value"])


def _md_table(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in frame.values]
    lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join("---" for _ in cells[0]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _markdown(metrics, context, parts, overview, pictures) -> str:
    out = [f"# {context.title}", ""]
    out += [f"- **{k}**: {v}" for k, v in overview]
    out += ["", "## Overall", "", _md_table(_metric_table(metrics))]
    for section in parts.sections:
        empty = section.table is None or section.table.empty
        out += ["", f"## {section.title}", "", section.empty if empty else _md_table(section.table)]
    out += ["", "## Pictures", ""]
    for name, caption in pictures:
        out += [f"![{name}]({name})", "", f"*{caption}*", ""]
    out += [f"Files: {', '.join([*parts.files, 'metrics.json'])}.", ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:90%;margin-bottom:2em}dt{font-weight:bold}dd{margin:0 0 .5em 1em}"""


def _html(folder, metrics, context, parts, overview, pictures) -> str:
    esc = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(context.title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{esc(context.title)}</h1><dl>"]
    out += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in overview]
    out.append("</dl><h2>Overall</h2>" + _metric_table(metrics).to_html(index=False))
    for section in parts.sections:
        empty = section.table is None or section.table.empty
        out.append(f"<h2>{esc(section.title)}</h2>")
        out.append(f"<p>{esc(section.empty)}</p>" if empty else section.table.to_html(index=False))
    out.append("<h2>Pictures</h2>")
    for name, caption in pictures:
        with open(os.path.join(folder, name), "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        out.append(f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{esc(caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)
