"""Command-line flags applied over a recipe: --epochs, --learning-rate and the simple keys."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from tltool.errors import TltoolError, did_you_mean
from tltool.recipe.messages import describe, relevant
from tltool.recipe.schema import Recipe

SIMPLE = ("backbone", "weights", "image_size", "batch_size", "seed", "precision", "jit_compile", "cache_features",
          "strategy")
DATA = ("val_split", "test_split", "aspect", "check_leakage")
OVERRIDES = (*SIMPLE, *DATA, "epochs", "learning_rate")  # the options tables mark these `recipe=True`


def apply_overrides(recipe: Recipe, **flags: Any) -> Recipe:
    """Return a copy of `recipe` with command-line flags applied.

    Flags (each None = not given): backbone, weights, image_size, batch_size,
    seed, epochs (N: every phase; xF: scale every phase; name=N,...: per
    phase), learning_rate (X: the first phase's rate becomes X and the others
    keep their ratio to it; xF: scale every phase), val_split, test_split,
    aspect, check_leakage, precision, jit_compile, cache_features, strategy.

    Raises:
        TltoolError: a flag value that is not allowed, naming the flag.
    """
    unknown = sorted(set(flags) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"apply_overrides: no flag {unknown[0]!r}; it takes {', '.join(OVERRIDES)}")
    data = recipe.model_dump()
    for key in SIMPLE:
        if flags.get(key) is not None:
            data[key] = flags[key]
    for key in DATA:
        if flags.get(key) is not None:
            data["data"][key] = flags[key]
    if flags.get("epochs") is not None:
        _override_epochs(data["phases"], str(flags["epochs"]))
    if flags.get("learning_rate") is not None:
        _override_learning_rate(data["phases"], str(flags["learning_rate"]))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = [describe(err) for err in e.errors() if relevant(err)]
        raise TltoolError("command-line override: " + "; ".join(problems)) from None


def _override_epochs(phases: list[dict], value: str) -> None:
    value = value.strip()
    try:
        if value.startswith("x"):
            factor = float(value[1:])
            if factor <= 0:
                raise ValueError
            for p in phases:
                p["epochs"] = max(1, math.ceil(p["epochs"] * factor))
        elif "=" in value:
            by_name = {p["name"]: p for p in phases}
            for part in value.split(","):
                name, _, count = part.partition("=")
                if name.strip() not in by_name:
                    raise TltoolError(
                        f"--epochs: no phase {name.strip()!r}{did_you_mean(name.strip(), by_name)}; "
                        f"phases: {', '.join(by_name)}"
                    )
                by_name[name.strip()]["epochs"] = int(count)
        else:
            count = int(value)
            for p in phases:
                p["epochs"] = count
    except ValueError:
        raise TltoolError(
            f"--epochs {value}: give N (every phase), xF (scale every phase) or name=N,name=N"
        ) from None


def _override_learning_rate(phases: list[dict], value: str) -> None:
    """X: the first phase's (top) rate becomes X, the others keep their ratio; xF: scale every rate.

    `auto` rates stay auto; discriminative {low, high} rates scale both ends.
    """
    try:
        factor = float(value[1:]) if value.startswith("x") else None
        target = None if factor is not None else float(value)
    except ValueError:
        raise TltoolError(f"--learning-rate {value}: give a number (e.g. 3e-4) or xF to scale") from None
    if (factor if factor is not None else target) <= 0:
        raise TltoolError(f"--learning-rate {value}: must be > 0")
    if factor is None:
        first = phases[0]["optimizer"]["learning_rate"]
        if first == "auto":  # no ratio to keep: the first phase gets X, the others stay as they are
            phases[0]["optimizer"]["learning_rate"] = target
            return
        factor = target / (first["high"] if isinstance(first, dict) else first)
    for p in phases:
        rate = p["optimizer"]["learning_rate"]
        if isinstance(rate, dict):
            p["optimizer"]["learning_rate"] = {"low": rate["low"] * factor, "high": rate["high"] * factor}
        elif rate != "auto":
            p["optimizer"]["learning_rate"] = rate * factor
