"""Optimizers and learning-rate schedules for one training phase."""

from __future__ import annotations

import math

import keras
from keras import ops

from tltool.compat import RateFactors
from tltool.recipe.schema import Phase, RateRange


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
        s.name, phase.optimizer.top_rate,
        total_steps=phase.epochs * steps_per_epoch,
        warmup_steps=round(s.warmup_epochs * steps_per_epoch),
        min_fraction=s.min_fraction, decay_rate=s.decay_rate,
        steps_per_epoch=steps_per_epoch, step_epochs=s.step_epochs,
    )


def make_optimizer(phase: Phase, steps_per_epoch: int, rate_factors=None, schedule=None) -> keras.optimizers.Optimizer:
    """The phase's optimizer, driven by its schedule.

    Args:
        rate_factors: (variable, factor) pairs: each variable's learning rate
            is the schedule's times its factor (discriminative rates); the
            others get the schedule's rate.
        schedule: a schedule to use instead of the phase's (the learning-rate
            finder's rising one).
    """
    opt = phase.optimizer
    schedule = schedule or make_schedule(phase, steps_per_epoch)
    decay = {"weight_decay": opt.weight_decay} if opt.weight_decay is not None else {}
    if opt.name == "adam":
        optimizer = Adam(schedule, **decay)
    elif opt.name == "adamw":
        optimizer = AdamW(schedule, **({"weight_decay": 0.004} | decay))
    elif opt.name == "sgd":
        optimizer = SGD(schedule, momentum=opt.momentum, nesterov=opt.momentum > 0, **decay)
    else:
        optimizer = RMSprop(schedule, momentum=opt.momentum, **decay)
    optimizer.set_rate_factors(rate_factors or [])
    return optimizer


def group_rates(rate, groups: list[str]) -> dict[str, float]:
    """Each trainable group's rate, and the head's, for a phase's `learning_rate`.

    A single rate applies to every group. {low, high} gives the first group
    `low`, the head `high`, and the groups between rates spread
    geometrically (fastai's `slice(low, high)`).

    Args:
        rate: the phase's learning_rate (a number or a RateRange).
        groups: names of the backbone's trainable freeze groups, input first.

    Returns:
        group name -> rate, with the head under "head".
    """
    if not isinstance(rate, RateRange):
        return {name: float(rate) for name in [*groups, "head"]}
    steps = len(groups)
    return {name: rate.low * (rate.high / rate.low) ** (i / steps) if steps else rate.high
            for i, name in enumerate([*groups, "head"])}


class Adam(RateFactors, keras.optimizers.Adam):
    pass


class AdamW(RateFactors, keras.optimizers.AdamW):
    pass


class SGD(RateFactors, keras.optimizers.SGD):
    pass


class RMSprop(RateFactors, keras.optimizers.RMSprop):
    pass


def describe_rates(rate, groups: list[str]) -> str:
    """A phase's rate in one phrase: '0.001', 'auto (learning-rate finder)' or '1e-05 (block_1) .. 0.001 (head)'."""
    if rate == "auto":
        return "auto (learning-rate finder)"
    if not isinstance(rate, RateRange):
        return f"{rate:g}"
    rates = group_rates(rate, groups)
    first = next(iter(rates))
    return f"{rates[first]:.3g} ({first}) .. {rates['head']:.3g} (head)" if first != "head" else f"{rates['head']:g}"

