"""`evaluate`: a trained model on a folder dataset, with a full per-class report."""

from __future__ import annotations

import os

from tltool.console import warn
from tltool.data.dataset import load_dataset
from tltool.errors import TltoolError
from tltool.evaluation.report import ReportContext, write_report
from tltool.files import atomic_path
from tltool.runs.run import Run, dated_folder
from tltool.serving.loading import TrainedModel, load_trained
from tltool.tasks import get_task


def evaluate(model: str, data: str, out: str | None = None, split: str | None = None,
             split_from: str | None = None, top_k: int = 5, batch_size: int = 32,
             progress: bool = True, tta: int = 1, explain: bool = True):
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
        explain: show each image of the gallery of mistakes beside its
            Grad-CAM heatmap (unless the run's recipe says ``explain: false``);
            a model that cannot give one (ONNX, LiteRT) shows the images alone.

    Returns:
        (the evaluation folder, the figures).

    Raises:
        TltoolError: a bad path, a class the model does not know, no images.
    """
    trained = load_trained(model)
    task = get_task(trained.task).decided(trained.decision)
    folder = out or _default_folder(trained, data, split)
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise TltoolError(f"--out {folder}: exists and is not empty; an earlier evaluation is never overwritten")
    _warn_if_training_images(trained, data, split)
    samples, skipped = _samples(trained, data, split, split_from, progress)
    known = set(trained.classes)
    present = {label for s in samples for label in s.labels}
    unknown = sorted(present - known)
    if unknown:
        raise TltoolError(f"{data} has classes the model does not know: {', '.join(unknown)}; "
                          f"model classes: {', '.join(trained.classes)}")
    if any(isinstance(s.label, tuple) for s in samples) != task.several_labels:
        raise TltoolError(f"{data} gives {'one class' if task.several_labels else 'several labels'} per image, "
                          f"but the model is {task.name}; evaluate it on data laid out as it was trained")
    missing = sorted(known - present)
    if missing:
        warn(f"{len(missing)} model class(es) have no images here: {', '.join(missing[:10])}")
    from tltool.data.tta import views

    names = views(tta, trained.flip)
    stack, kept = trained.view_probabilities([s.path for s in samples], batch_size, progress, names)
    probs = stack[0]
    unread = [(samples[i].rel, "could not be decoded") for i in sorted(set(range(len(samples))) - set(kept))]
    if not len(kept):
        raise TltoolError(f"{data}: none of the {len(samples)} images could be read")
    targets = task.targets([samples[i].label for i in kept], trained.classes)
    evaluation = task.evaluate(targets, probs, trained.classes, top_k)
    augmented = None
    if tta > 1:
        figures = task.headline(task.evaluate(targets, stack.mean(axis=0), trained.classes).metrics)
        augmented = {"views": len(names), "names": names, **figures}
    run = trained.run
    run_name = os.path.basename(trained.run_dir or trained.source)
    context = ReportContext(
        title=f"Evaluation of {run_name} on {os.path.basename(os.path.normpath(data))}",
        model=f"{trained.source} ({trained.kind}, {trained.image_size} px, aspect {trained.aspect})",
        split=split or "all", data_root=os.path.abspath(data) if os.path.isdir(data) else os.path.dirname(os.path.abspath(data)),
        paths=[samples[i].rel for i in kept], recipe=(run.recipe if run else None) or None,
        history=run.history if run else None, unreadable=skipped + unread, tta=augmented,
        explain=_explainer(trained, explain), tuned_here=_tuned_here(trained, task, data, split),
        **_fit_record(trained),
    )
    with atomic_path(folder) as tmp:
        os.makedirs(tmp)
        write_report(tmp, evaluation.metrics, task.write_files(tmp, evaluation, context), context)
    return folder, evaluation


def _explainer(trained: TrainedModel, wanted: bool):
    """Heatmaps for the gallery, unless turned off or the model cannot give them (then it says why, in one line)."""
    from tltool.console import say
    from tltool.evaluation.gradcam import ImageExplainer, explainer_of

    if not wanted or (trained.run and trained.run.recipe.get("explain") is False):
        return None
    try:
        return ImageExplainer(explainer_of(trained), trained.image_size, trained.aspect)
    except TltoolError as e:
        say(f"the gallery of mistakes shows no heatmaps: {str(e).split('; ')[0]}")
        return None


def _tuned_here(trained: TrainedModel, task, data: str, split: str | None) -> str | None:
    """What the run tuned on these images: its own validation split, evaluated again."""
    return task.tuned_on_val if split == "val" and _trained_on(trained, data) else None


def _trained_on(trained: TrainedModel, data: str) -> bool:
    """Whether `data` is the dataset the model's run trained on."""
    recorded = trained.run.dataset if trained.run else None
    return bool(recorded) and os.path.abspath(data) == os.path.abspath(recorded)


def _warn_if_training_images(trained: TrainedModel, data: str, split: str | None) -> None:
    if split is None and _trained_on(trained, data):
        warn(f"{data} is the dataset this model was trained on: without --split, its training images are scored "
             "too and the figures look better than they are; pass --split val (or test)")


def _samples(trained: TrainedModel, data: str, split: str | None, split_from: str | None, progress: bool):
    ds = load_dataset(data, 0.0, 0.0, progress=progress)
    if split is not None and not ds.split_given:
        source = split_from or trained.run_dir
        if source is None:
            raise TltoolError(f"--split {split}: {data} names no splits (no {split}/ folder); "
                              "pass --split-from RUN to use the split of an earlier run")
        ds = load_dataset(data, split_from=Run(source), progress=progress)
    samples = ds.samples if split is None else ds.split(split)
    if not samples:
        where = f" in split {split!r}" if split else ""
        raise TltoolError(f"{data}: no usable images{where} to evaluate")
    return samples, [(sk.rel, sk.reason) for sk in ds.skipped]


def _default_folder(trained: TrainedModel, data: str, split: str | None) -> str:
    """RUN/evaluations/<date>-<data>[-<split>][-<format>]: an exported file's format is in the name."""
    from tltool.serving.formats import format_of

    name = os.path.basename(os.path.normpath(data)) + (f"-{split}" if split else "")
    if not (trained.run and trained.source == trained.run.model_file):
        name += f"-{format_of(trained.source, trained.kind)}"
    if trained.run:
        return trained.run.new_evaluation_folder(name)
    return dated_folder(os.path.join(os.path.dirname(trained.source), "evaluations"), name)


def _fit_record(trained: TrainedModel) -> dict:
    """Which phase and epoch a run's model.keras holds, and its calibration, as its fit recorded."""
    run = trained.run
    if not run or trained.source != run.model_file:
        return {}
    recorded = run.metrics
    return {"exported": recorded.get("exported"), "calibration": recorded.get("calibration")}
