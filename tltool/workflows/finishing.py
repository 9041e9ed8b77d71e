"""A run's last steps after training: the exported weights, calibration, model files and the report.

`finish(session)` applies the recipe's `export_weights` rule across every
phase, lets the task calibrate on the validation split, writes model.keras
and the SavedModel, and evaluates the test split (or validation) into the
run directory. It returns the figures; the CLI prints them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tltool.console import say, warn
from tltool.evaluation.report import ReportContext, describe_exported, write_report
from tltool.serving.formats import export_saved_model, model_info, save_keras
from tltool.tasks.base import Task


@dataclass
class Finished:
    """What `finish` made: the chosen epoch, the calibration and the evaluation (None without a split)."""

    exported: dict
    calibration: dict | None
    evaluation: object | None
    split: str | None


def finish(session) -> Finished:
    from tltool.evaluation.gradcam import gradcam_for
    from tltool.models.classifier import forward_function  # imports Keras: not before TensorFlow loads quietly

    exported = choose_exported_weights(session)
    calibration = calibrate(session)
    model = session.task.calibrated(session.clf.inference, calibration)
    task = session.task = decide(session, model)
    recipe, run = session.recipe, session.run
    info = model_info(session.dataset.classes, recipe.image_size, recipe.data.aspect, session.spec.name, task)
    forward = forward_function(model, recipe.image_size)  # one trace: the export and the evaluation share it
    cam = gradcam_for(model, session.spec)  # and one of Grad-CAM: the SavedModel's and the report's
    save_keras(model, run.model_file)
    export_saved_model(model, run.saved_model_dir, info, task, forward, cam.function)
    say(f"saved model.keras and saved_model/ in {run.path} (weights of {describe_exported(exported)})")
    split, evaluation = evaluate_split(session, forward, exported, calibration, cam)
    return Finished(exported, calibration, evaluation, split)


def choose_exported_weights(session) -> dict:
    """Apply the recipe's `export_weights` rule; mark the chosen epoch in history.csv.

    `best` (the default) takes the best epoch by the monitored metric
    across all phases, so a later phase that ends worse never costs the
    model an earlier phase's better weights; `last` keeps the weights
    the final epoch ended with.
    """
    state, rule = session.state, session.recipe.export_weights
    files = state.files["best" if rule == "best" and state.files.get("best") else "latest"]
    session.checkpoints.load_weights(files)
    row = next((r for r in session.history if r["epoch"] == files["epoch"]), None)  # None: history.csv was lost
    phase = row["phase"] if row else session.recipe.phases[files["phase"]].name
    chosen = {"rule": rule, "monitor": state.monitor, "phase": phase, "epoch": files["epoch"],
              "value": row.get(state.monitor) if row else None}
    for row in session.history:
        row["exported"] = row["epoch"] == chosen["epoch"]
    session.run.write_history(session.history)
    return chosen


def calibrate(session) -> dict | None:
    """`calibrate: true`: the task's calibration, fitted on the validation split for the exported weights."""
    if not session.recipe.calibrate:
        return None
    outputs = session.validation_outputs(session.clf.inference)
    if outputs is None:
        return None
    record = session.task.calibrate(*outputs)
    if record:
        say(f"calibration: {session.task.describe_calibration(record)}")
    return record


def decide(session, model):
    """The task deciding by what it tunes on the calibrated model's validation outputs (multi-label: a threshold
    per class), kept in the run's decision.json; the task unchanged where it tunes nothing."""
    task = session.task
    if type(task).decide is Task.decide:  # a fixed rule (argmax): no validation pass
        return task
    outputs = session.validation_outputs(model)
    decision = task.decide(*outputs) if outputs is not None else None
    if decision is None:
        return task
    session.run.write_decision(decision)
    say(f"decision: {task.describe_decision(decision, session.dataset.classes)}")
    return task.decided(decision)


def evaluate_split(session, forward, exported: dict, calibration: dict | None, cam=None):
    """(split, evaluation) of the test split (or validation) into the run directory; (None, None) without one.

    `forward` runs the exported model (its `forward_function`); `cam`, its Grad-CAM, gives the gallery's
    heatmaps (unless the recipe says ``explain: false``).
    """
    from tltool.evaluation.gradcam import ImageExplainer
    from tltool.serving.loading import predict_images

    dataset, recipe, task = session.dataset, session.recipe, session.task
    split = "test" if dataset.split("test") else "val"
    samples = dataset.split(split)
    if not samples:
        warn("no validation or test images: no per-class report (use --val-split > 0)")
        return None, None
    probs, kept = predict_images(forward, [s.path for s in samples], recipe.image_size, recipe.data.aspect,
                                 recipe.batch_size)
    evaluation = task.evaluate(task.targets([samples[i].label for i in kept], dataset.classes), probs,
                               dataset.classes)
    lost = sorted(set(range(len(samples))) - {int(i) for i in kept})
    run = session.run
    context = ReportContext(
        title=f"tltool run {os.path.basename(run.path)}", model=run.model_file, split=split,
        data_root=dataset.root, paths=[samples[i].rel for i in kept], recipe=recipe.model_dump(mode="json"),
        history=run.history, unreadable=[(sk.rel, sk.reason) for sk in dataset.skipped]
        + [(samples[i].rel, "could not be decoded") for i in lost],
        exported=exported, calibration=calibration,
        explain=ImageExplainer(cam, recipe.image_size, recipe.data.aspect) if cam and recipe.explain else None,
        leaked=run.leaked(split), tuned_here=task.tuned_on_val if split == "val" else None,
    )
    parts = task.write_files(run.path, evaluation, context)
    write_report(run.path, evaluation.metrics, parts, context)
    return split, evaluation
