"""What `tltool inspect` reports about a dataset: counts, imbalance, sizes, formats, duplicates."""

from __future__ import annotations

from collections import Counter

import numpy as np

from tltool.console import table
from tltool.data.dataset import Dataset
from tltool.data.duplicates import exact_groups
from tltool.data.split import SPLITS


def duplicates(ds: Dataset) -> dict[str, list[list[str]]]:
    """Groups of files with identical bytes (`tltool.data.duplicates.exact_groups`), by what they put at risk.

    Returns:
        ``across_classes``: the same image under two labels (one is wrong);
        ``across_splits``: the same image in two splits (validation leaks);
        ``within``: plain copies in one class and split.
    """
    found = {"across_classes": [], "across_splits": [], "within": []}
    for members in exact_groups(ds.samples, ds.infos):
        rels = sorted(m.rel for m in members)
        if len({m.label for m in members}) > 1:
            found["across_classes"].append(rels)
        elif len({m.split for m in members}) > 1:
            found["across_splits"].append(rels)
        else:
            found["within"].append(rels)
    return found


SHOWN_PATHS = 3  # of a group of copies, in a warning


def duplicate_warnings(ds: Dataset, listed_in: str | None = None) -> list[str]:
    """One line per kind of risky copies, with one group as an example (at most `SHOWN_PATHS` of its paths);
    `listed_in` names the file that lists every group."""
    found = duplicates(ds)
    every = f"; every group: {listed_in}" if listed_in else ""
    out = []
    if found["across_classes"]:
        out.append(f"{len(found['across_classes'])} image(s) appear under two classes, e.g. "
                   f"{_example(found['across_classes'][0])}; one label is wrong{every}")
    if found["across_splits"]:
        out.append(f"{len(found['across_splits'])} image(s) appear in two splits, e.g. "
                   f"{_example(found['across_splits'][0])}; validation figures will be optimistic{every}")
    return out


def duplicate_rows(ds: Dataset) -> list[list]:
    """Every group of exact copies, one row per file: group, path, label, split."""
    by_rel = {s.rel: s for s in ds.samples}
    groups = [group for kind in duplicates(ds).values() for group in kind]
    return [[g, rel, by_rel[rel].cell, by_rel[rel].split]
            for g, group in enumerate(groups) for rel in group]


def _example(group: list[str]) -> str:
    shown = " = ".join(group[:SHOWN_PATHS])
    return shown + (f" (and {len(group) - SHOWN_PATHS} more copies)" if len(group) > SHOWN_PATHS else "")


def summarise(ds: Dataset) -> dict:
    """Everything `inspect` shows, as plain data (the --json output)."""
    counts = ds.counts()
    train = counts["train"]
    per_class = [{"class": c, **{s: counts[s][c] for s in SPLITS}, "total": sum(counts[s][c] for s in SPLITS)}
                 for c in ds.classes]
    present = {c: n for c, n in train.items() if n}
    infos = [ds.infos[s.path] for s in ds.samples]
    widths = np.array([i.width for i in infos]) if infos else np.zeros(0)
    heights = np.array([i.height for i in infos]) if infos else np.zeros(0)
    return {
        "root": ds.root,
        "layout": ds.layout,
        "usable": not ds.problems,
        "problems": ds.problems,
        "warnings": ds.warnings + duplicate_warnings(ds),
        "classes": per_class,
        "images": ds.images(),
        "multi_label": _multi_label(ds) if ds.multi_label else None,
        "imbalance": _imbalance(present),
        "sizes": _sizes(widths, heights),
        "formats": dict(Counter(i.format for i in infos).most_common()),
        "modes": dict(Counter(i.mode for i in infos).most_common()),
        "duplicates": duplicates(ds),
        "skipped": [{"path": s.rel, "reason": s.reason} for s in ds.skipped],
        "skipped_reasons": dict(Counter(s.reason for s in ds.skipped).most_common()),
        "hidden_ignored": ds.hidden,
    }


def _multi_label(ds: Dataset, pairs: int = 10) -> dict:
    """Label cardinality, images without a label, and the labels that most often appear together."""
    used = [s for s in ds.samples if s.split]
    together = Counter((a, b) for s in used for i, a in enumerate(s.labels) for b in s.labels[i + 1:])
    return {"label_cardinality": round(float(np.mean([len(s.labels) for s in used])), 3) if used else 0.0,
            "images_without_labels": sum(1 for s in used if not s.labels),
            "most_labels_on_an_image": max((len(s.labels) for s in used), default=0),
            "co_occurrence": [[a, b, n] for (a, b), n in together.most_common(pairs)]}


def _imbalance(train: dict[str, int]) -> dict | None:
    if not train:
        return None
    largest = max(train, key=train.get)
    smallest = min(train, key=train.get)
    return {"ratio": round(train[largest] / train[smallest], 2), "largest": [largest, train[largest]],
            "smallest": [smallest, train[smallest]]}


def _sizes(widths: np.ndarray, heights: np.ndarray) -> dict | None:
    if not len(widths):
        return None
    areas = widths * heights
    order = np.argsort(areas)
    pick = lambda i: f"{int(widths[order[i]])}x{int(heights[order[i]])}"  # noqa: E731
    return {"smallest": pick(0), "median": pick(len(order) // 2), "largest": pick(-1),
            "distinct": int(len(set(zip(widths.tolist(), heights.tolist()))))}


def format_summary(summary: dict, show_all: bool = False) -> str:
    """The human-readable `inspect` report."""
    images = summary["images"]
    lines = [f"dataset {summary['root']} ({summary['layout']} layout): {len(summary['classes'])} classes, "
             f"{sum(images.values())} usable images (train {images['train']}, val {images['val']}, "
             f"test {images['test']}), {len(summary['skipped'])} skipped, "
             f"{summary['hidden_ignored']} hidden ignored", ""]
    rows = [[c["class"], c["train"], c["val"], c["test"], c["total"]] for c in summary["classes"]]
    shown = rows if show_all or len(rows) <= 40 else rows[:40]
    lines.append(table(shown, ["class", "train", "val", "test", "total"]))
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more classes (--all shows every class)")
    multi = summary.get("multi_label")
    if multi:
        lines.append(f"\nseveral labels per image: {multi['label_cardinality']} labels per image on average "
                     f"(at most {multi['most_labels_on_an_image']}), {multi['images_without_labels']} image(s) "
                     "without a label (negatives); counts above are images that hold each label")
        if multi["co_occurrence"]:
            lines.append("labels that appear together most: "
                         + ", ".join(f"{a} + {b} {n}" for a, b, n in multi["co_occurrence"]))
    if summary["imbalance"]:
        imb = summary["imbalance"]
        lines.append(f"\nimbalance: largest/smallest training class = {imb['ratio']} "
                     f"({imb['largest'][0]} {imb['largest'][1]} / {imb['smallest'][0]} {imb['smallest'][1]})")
    if summary["sizes"]:
        sz = summary["sizes"]
        lines.append(f"image sizes: {sz['smallest']} .. {sz['largest']} (median {sz['median']}, "
                     f"{sz['distinct']} distinct)")
        lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in summary["formats"].items())
                     + "; modes: " + ", ".join(f"{k} {v}" for k, v in summary["modes"].items()))
    dup = summary["duplicates"]
    if any(dup.values()):
        lines.append(f"duplicates: {len(dup['across_classes'])} across classes, {len(dup['across_splits'])} "
                     f"across splits, {len(dup['within'])} within a class")
        for kind in ("across_classes", "across_splits"):
            for group in dup[kind][: None if show_all else 5]:
                lines.append(f"  {kind.replace('_', ' ')}: {' = '.join(group)}")
    if summary["skipped"]:
        reasons = ", ".join(f"{n} {r}" for r, n in summary["skipped_reasons"].items())
        lines.append(f"\nskipped {len(summary['skipped'])} file(s): {reasons}")
        skipped = summary["skipped"] if show_all else summary["skipped"][:20]
        lines.append(table([[s["path"], s["reason"]] for s in skipped], ["file", "reason"], "ll"))
        if len(skipped) < len(summary["skipped"]):
            lines.append(f"... {len(summary['skipped']) - len(skipped)} more (--all shows every file)")
    for w in summary["warnings"]:
        lines.append(f"warning: {w}")
    lines.append("")
    if summary["usable"]:
        lines.append("usable: yes")
    else:
        lines.extend(f"not usable: {p}" for p in summary["problems"])
    return "\n".join(lines)
