"""`evaluate`: a trained model on a folder dataset, with a full per-class report."""

from __future__ import annotations

import json
import os

import pandas as pd

from tltool.console import say, warn
from tltool.data.dataset import load_dataset
from tltool.errors import TltoolError
from tltool.files import atomic_path
from tltool.serving.loading import TrainedModel, load_trained
from tltool.evaluation.metrics import Evaluation, evaluate_probs
from tltool.evaluation.report import ReportContext, write_evaluation
from tltool.runs.run import dated_folder, read_recipe


def evaluate(model: str, data: str, out: str | None = None, split: str | None = None,
             split_from: str | None = None, top_k: int = 5, batch_size: int = 32,
             progress: bool = True, tta: int = 1) -> tuple[str, Evaluation]:
    """Evaluate a run directory, SavedModel or .keras file on `data`.

    Args:
        model: what to evaluate.
        data: a folder dataset (or CSV) whose classes the model knows.
        out: the evaluation folder; default a new folder in the run directory
            (or beside the model) under ``evaluations/``. Never overwritten.
        split: evaluate only this split (train, val or test) of `data`: its
            folder when `data` is pre-split, else the split recorded by
            `split_from` (default: the model's own run directory).
        top_k: k for top-k accuracy and recall.
        tta: test-time augmentation views; above 1, the report adds the
            figures averaged over that many views (`tltool.data.tta`) beside the
            plain ones, which stay the headline (the served model sees one
            view).

    Returns:
        (the evaluation folder, the figures).

    Raises:
        TltoolError: a bad path, a class the model does not know, no images.
    """
    trained = load_trained(model)
    folder = out or _default_folder(trained, data, split)
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise TltoolError(f"--out {folder}: exists and is not empty; an earlier evaluation is never overwritten")
    _warn_if_training_images(trained, data, split)
    samples, skipped = _samples(trained, data, split, split_from, progress)
    index = {c: i for i, c in enumerate(trained.classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise TltoolError(f"{data} has classes the model does not know: {', '.join(unknown)}; "
                          f"model classes: {', '.join(trained.classes)}")
    missing = sorted(set(index) - {s.label for s in samples})
    if missing:
        warn(f"{len(missing)} model class(es) have no images here: {', '.join(missing[:10])}")
    from tltool.data.tta import views

    names = views(tta, trained.flip)
    stack, kept = trained.view_probabilities([s.path for s in samples], batch_size, progress, names)
    probs = stack[0]
    unread = [(samples[i].rel, "could not be decoded") for i in sorted(set(range(len(samples))) - set(kept))]
    if not len(kept):
        raise TltoolError(f"{data}: none of the {len(samples)} images could be read")
    labels = [index[samples[i].label] for i in kept]
    evaluation = evaluate_probs(labels, probs, trained.classes, top_k)
    augmented = _tta_figures(labels, stack, trained.classes, names) if tta > 1 else None
    run_name = os.path.basename(trained.run_dir or trained.source)
    context = ReportContext(
        title=f"Evaluation of {run_name} on {os.path.basename(os.path.normpath(data))}",
        model=f"{trained.source} ({trained.kind}, {trained.image_size} px, aspect {trained.aspect})",
        split=split or "all", data_root=os.path.abspath(data) if os.path.isdir(data) else os.path.dirname(os.path.abspath(data)),
        paths=[samples[i].rel for i in kept], recipe=read_recipe(trained.run_dir) or None, history=_history(trained),
        unreadable=skipped + unread, tta=augmented, **_fit_record(trained),
    )
    with atomic_path(folder) as tmp:
        os.makedirs(tmp)
        write_evaluation(tmp, evaluation, context)
    return folder, evaluation


def _tta_figures(labels, stack, classes: list[str], names: list[str]) -> dict:
    figures = evaluate_probs(labels, stack.mean(axis=0), classes).metrics
    return {"views": len(names), "names": names,
            **{k: figures[k] for k in ("accuracy", "macro_f1", "log_loss", "expected_calibration_error")}}


def _warn_if_training_images(trained: TrainedModel, data: str, split: str | None) -> None:
    recorded = (read_recipe(trained.run_dir).get("provenance") or {}).get("dataset")
    if split is None and recorded and os.path.abspath(data) == os.path.abspath(recorded):
        warn(f"{data} is the dataset this model was trained on: without --split, its training images are scored "
             "too and the figures look better than they are; pass --split val (or test)")


def _samples(trained: TrainedModel, data: str, split: str | None, split_from: str | None, progress: bool):
    ds = load_dataset(data, 0.0, 0.0, progress=progress)
    if split is not None and not ds.split_given:
        source = split_from or trained.run_dir
        if source is None:
            raise TltoolError(f"--split {split}: {data} names no splits (no {split}/ folder); "
                              "pass --split-from RUN to use the split of an earlier run")
        ds = load_dataset(data, split_from=source, progress=progress)
    samples = ds.samples if split is None else ds.split(split)
    if not samples:
        where = f" in split {split!r}" if split else ""
        raise TltoolError(f"{data}: no usable images{where} to evaluate")
    return samples, [(sk.rel, sk.reason) for sk in ds.skipped]


def _default_folder(trained: TrainedModel, data: str, split: str | None) -> str:
    base = trained.run_dir or os.path.dirname(trained.source)
    name = os.path.basename(os.path.normpath(data)) + (f"-{split}" if split else "")
    return dated_folder(os.path.join(base, "evaluations"), name)


def _fit_record(trained: TrainedModel) -> dict:
    """Which phase and epoch a run's model.keras holds, and its calibration, as its fit recorded."""
    if not trained.run_dir or trained.source != os.path.join(trained.run_dir, "model.keras"):
        return {}
    path = os.path.join(trained.run_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    recorded = _read_json(path)
    return {"exported": recorded.get("exported"), "calibration": recorded.get("calibration")}


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _history(trained: TrainedModel) -> pd.DataFrame | None:
    path = os.path.join(trained.run_dir, "history.csv") if trained.run_dir else None
    return pd.read_csv(path) if path and os.path.isfile(path) else None


def print_evaluation(folder: str, evaluation: Evaluation, show_all: bool = False) -> None:
    from tltool.evaluation.metrics import format_per_class, format_summary

    print(format_summary(evaluation.metrics))  # on stdout with its table
    print(format_per_class(evaluation.per_class, None if show_all else 20))
    tta = _read_json(os.path.join(folder, "metrics.json")).get("tta")
    if tta:
        print(f"with test-time augmentation ({tta['views']} views): accuracy {tta['accuracy']:.4f} "
              f"({tta['accuracy'] - evaluation.metrics['accuracy']:+.4f}), macro_f1 {tta['macro_f1']:.4f}; "
              "the exported model serves without it")
    say(f"report: {os.path.join(folder, 'report.html')}")
