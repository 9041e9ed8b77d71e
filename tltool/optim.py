"""Optimizers and learning-rate schedules for one training phase."""

from __future__ import annotations

import math

import keras
from keras import ops

from tltool.recipe import Phase


@keras.saving.register_keras_serializable(package="tltool")
class PhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up (lr/W, 2lr/W, ... lr over W steps), then constant, cosine, exponential or step decay.

    Steps count from the start of the phase; epochs are converted to steps
    with `steps_per_epoch`.

    Example:
        >>> s = PhaseSchedule("cosine", 1e-3, total_steps=100, warmup_steps=10)
        >>> float(s(9))  # the last warm-up step reaches the full rate
        0.001
    """

    def __init__(self, kind, learning_rate, total_steps, warmup_steps=0, min_fraction=0.0,
                 decay_rate=0.5, steps_per_epoch=1, step_epochs=1):
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_fraction = float(min_fraction)
        self.decay_rate = float(decay_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.step_epochs = int(step_epochs)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = self.learning_rate
        after = ops.maximum(step - self.warmup_steps, 0.0)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.minimum(after / span, 1.0)
            decayed = lr * (self.min_fraction + (1 - self.min_fraction) * 0.5 * (1 + ops.cos(math.pi * progress)))
        elif self.kind == "exponential":
            decayed = lr * ops.power(self.decay_rate, after / self.steps_per_epoch)
        elif self.kind == "step":
            drops = ops.floor(after / (self.steps_per_epoch * self.step_epochs))
            decayed = lr * ops.power(self.decay_rate, drops)
        else:
            decayed = lr * ops.ones_like(step)
        if self.warmup_steps <= 0:
            return decayed
        warm = lr * ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "kind": self.kind, "learning_rate": self.learning_rate, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps, "min_fraction": self.min_fraction,
            "decay_rate": self.decay_rate, "steps_per_epoch": self.steps_per_epoch,
            "step_epochs": self.step_epochs,
        }


def make_schedule(phase: Phase, steps_per_epoch: int) -> PhaseSchedule:
    s = phase.schedule
    return PhaseSchedule(
        s.name, phase.optimizer.learning_rate,
        total_steps=phase.epochs * steps_per_epoch,
        warmup_steps=round(s.warmup_epochs * steps_per_epoch),
        min_fraction=s.min_fraction, decay_rate=s.decay_rate,
        steps_per_epoch=steps_per_epoch, step_epochs=s.step_epochs,
    )


def make_optimizer(phase: Phase, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The phase's optimizer, driven by its schedule."""
    opt = phase.optimizer
    schedule = make_schedule(phase, steps_per_epoch)
    decay = {"weight_decay": opt.weight_decay} if opt.weight_decay is not None else {}
    if opt.name == "adam":
        return keras.optimizers.Adam(schedule, **decay)
    if opt.name == "adamw":
        return keras.optimizers.AdamW(schedule, **({"weight_decay": 0.004} | decay))
    if opt.name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=opt.momentum, nesterov=opt.momentum > 0, **decay)
    return keras.optimizers.RMSprop(schedule, momentum=opt.momentum, **decay)
