"""The learning-rate range test (Leslie Smith's LR finder, as fastai's `lr_find`).

Train from a phase's starting point for up to `steps` batches while the rate
rises exponentially from `start` to `end`; record the loss of each batch;
stop early when the smoothed loss diverges (above 4x its minimum, or not a
number). The suggestion is the rate at the smoothed loss's minimum divided
by 10 ("minimum / 10"): the loss still falls fast there and is far from
diverging. The steepest descent of the smoothed loss is reported beside it.
The caller restores the weights; the sweep has its own optimizer, so the
phase's optimizer starts fresh after it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from tltool.files import write_csv

START, END, STEPS = 1e-7, 10.0, 100
DIVERGE = 4.0
SMOOTHING = 0.98


@keras.saving.register_keras_serializable(package="tltool")
class RisingRate(keras.optimizers.schedules.LearningRateSchedule):
    """start * (end / start) ** (step / (steps - 1)): exponential from start to end over `steps` steps."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.end, self.steps = float(start), float(end), int(steps)

    def __call__(self, step):
        fraction = ops.cast(step, "float32") / max(1, self.steps - 1)
        return self.start * ops.power(self.end / self.start, fraction)

    def rate(self, step: int) -> float:
        return self.start * (self.end / self.start) ** (step / max(1, self.steps - 1))

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps}


@dataclass
class Sweep:
    rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float
    steepest: float
    rule: str = "minimum of the smoothed loss / 10"

    def table(self):
        import pandas as pd

        return pd.DataFrame({"learning_rate": self.rates, "loss": self.losses, "smoothed_loss": self.smoothed})


def range_test(compile_with, model, batches, class_weight=None, start: float = START, end: float = END,
               steps: int = STEPS) -> Sweep:
    """Run the sweep on `model` (weights are changed: restore them afterwards).

    Args:
        compile_with: compiles `model` with a given learning-rate schedule.
        batches: the phase's training batches, repeated without end.
    """
    schedule = RisingRate(start, end, steps)
    compile_with(schedule)
    rates, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    for step, (x, y) in enumerate(batches.take(steps)):
        loss = float(model.train_on_batch(x, y, class_weight=class_weight, return_dict=True)["loss"])
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        value = average / (1 - SMOOTHING ** (step + 1))
        rates.append(schedule.rate(step))
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if step >= 10 and value > DIVERGE * best:
            break
    return _suggest(np.array(rates), np.array(losses), np.array(smoothed))


def _suggest(rates: np.ndarray, losses: np.ndarray, smoothed: np.ndarray) -> Sweep:
    if len(rates) < 3:
        from tltool.errors import TltoolError

        raise TltoolError(f"the learning-rate sweep diverged at once: {len(rates)} finite loss(es) before it stopped; "
                          "check the data (labels, images that decode to noise), or give the phase a fixed "
                          "learning_rate instead of auto")
    lowest = int(np.argmin(smoothed))
    suggestion = max(rates[lowest] / 10, rates[0])
    slopes = np.gradient(smoothed, np.log(rates))
    upto = max(lowest, 2)
    steepest = rates[int(np.argmin(slopes[1:upto])) + 1]
    return Sweep(rates, losses, smoothed, float(suggestion), float(steepest))


def write_sweep(sweep: Sweep, folder: str, phase: str | None = None) -> tuple[str, str]:
    """lr_find.csv and lr_find.png (or lr_find-PHASE.*) in `folder`."""
    stem = os.path.join(folder, f"lr_find-{phase}" if phase else "lr_find")
    write_csv(stem + ".csv", sweep.table())
    sweep_png(sweep, stem + ".png")
    return stem + ".csv", stem + ".png"


def sweep_png(sweep, path: str) -> None:
    """Loss against learning rate (log axis), the suggestion marked."""
    from matplotlib.figure import Figure

    from tltool.files import atomic_path

    fig = Figure(figsize=(7, 4.5), constrained_layout=True)
    ax = fig.subplots()
    ax.plot(sweep.rates, sweep.losses, color="lightgrey", linewidth=1, label="loss per batch")
    ax.plot(sweep.rates, sweep.smoothed, color="tab:blue", label="smoothed loss")
    for rate, colour, name in ((sweep.suggestion, "crimson", f"suggested {sweep.suggestion:.2g} ({sweep.rule})"),
                               (sweep.steepest, "tab:orange", f"steepest descent {sweep.steepest:.2g}")):
        ax.axvline(rate, color=colour, linestyle="--", label=name)
    top = np.nanmax(sweep.smoothed[: max(1, int(np.argmin(sweep.smoothed)) + 1)])
    ax.set_ylim(min(sweep.smoothed) * 0.9, max(top, min(sweep.smoothed)) * 1.3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:  # the temporary name keeps the .png ending
        fig.savefig(tmp, dpi=100)
