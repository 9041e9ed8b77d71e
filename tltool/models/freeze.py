"""Freeze plans: which backbone layers train in a phase, and applying that to Keras.

Keras 3 semantics we rely on: ``layer.trainable = False`` stops weight
updates, and a BatchNormalization layer that is not trainable also runs in
inference mode (its moving statistics stay put). Setting ``trainable`` on a
model sets it on every layer inside, so a plan first unfreezes the backbone,
then freezes layer by layer. The model must be compiled again afterwards.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tltool.models.applications import BackboneSpec, resolve_groups
from tltool.errors import TltoolError, did_you_mean
from tltool.recipe.schema import Fraction, FromLayer, Groups, LastGroups, LastLayers, Pattern


@dataclass
class FreezePlan:
    """The outcome of a phase's `trainable` and `batchnorm` settings.

    Attributes:
        trainable: names of the backbone's top-level layers that train.
        batchnorm: frozen | train.
        momentum: BatchNorm momentum while training; None keeps the backbone's.
        groups: per freeze group: (name, weighted layers training, weighted layers).
    """

    trainable: set[str]
    batchnorm: str
    groups: list[tuple[str, int, int]]
    momentum: float | None = None

    @property
    def trains_backbone(self) -> bool:
        return bool(self.trainable)


def static_problems(spec: BackboneSpec, recipe) -> list[str]:
    """What can be checked against a backbone without building it: group names, image size."""
    problems = []
    for i, phase in enumerate(recipe.phases):
        if isinstance(phase.trainable, LastGroups) and phase.trainable.last_groups > len(spec.group_names):
            problems.append(f"phases[{i}].trainable.{_too_many_groups(spec, phase.trainable.last_groups)}")
        if isinstance(phase.trainable, Groups):
            for name in phase.trainable.groups:
                if name not in spec.group_names:
                    problems.append(
                        f"phases[{i}].trainable.groups: {spec.name} has no group {name!r}"
                        f"{did_you_mean(name, spec.group_names)}; its groups: {', '.join(spec.group_names)}"
                    )
    if recipe.image_size is not None and recipe.image_size < spec.min_size:
        problems.append(f"image_size: {recipe.image_size} is below {spec.name}'s minimum of {spec.min_size}")
    return problems


def _too_many_groups(spec: BackboneSpec, asked: int) -> str:
    return (f"last_groups: {spec.name} has {len(spec.group_names)} groups, not {asked}; "
            f"give at most {len(spec.group_names)}, or trainable: all")


def layer_problems(spec: BackboneSpec, backbone, recipe) -> list[str]:
    """Every phase's layer-name problem (from_layer, pattern) against a built backbone, with its key path."""
    problems = []
    for i, phase in enumerate(recipe.phases):
        if isinstance(phase.trainable, (FromLayer, Pattern)):
            try:
                resolve_plan(spec, backbone, phase.trainable)
            except TltoolError as e:
                problems.append(f"phases[{i}].{e}")
    return problems


def needs_layer_names(recipe) -> bool:
    """Whether checking the recipe against a backbone needs the built model."""
    return any(isinstance(p.trainable, (FromLayer, Pattern)) for p in recipe.phases)


def resolve_plan(spec: BackboneSpec, backbone, trainable, batchnorm: str = "frozen",
                 momentum: float | None = None) -> FreezePlan:
    """Turn a recipe's `trainable` value into the set of layers that train.

    Raises:
        TltoolError: a group or layer name that the backbone does not have,
            or a pattern that matches no layer; the message lists valid names.
    """
    layers = backbone.layers
    names = [layer.name for layer in layers]
    weighted = [i for i, layer in enumerate(layers) if layer.weights]
    groups = resolve_groups(spec, names)
    chosen = _choose(spec, trainable, names, weighted, groups)
    summary = [
        (g, sum(1 for i in weighted if start <= i < end and i in chosen),
         sum(1 for i in weighted if start <= i < end))
        for g, start, end in groups
    ]
    return FreezePlan({names[i] for i in chosen}, batchnorm, summary, momentum)


def _choose(spec, trainable, names, weighted, groups) -> set[int]:
    if trainable == "none":
        return set()
    if trainable == "all":
        return set(range(len(names)))
    if isinstance(trainable, LastGroups):
        if trainable.last_groups > len(groups):
            raise TltoolError(_too_many_groups(spec, trainable.last_groups))
        picked = groups[-trainable.last_groups:]
        return {i for _, start, end in picked for i in range(start, end)}
    if isinstance(trainable, Groups):
        valid = [g for g, _, _ in groups]
        for name in trainable.groups:
            if name not in valid:
                raise TltoolError(
                    f"trainable.groups: {spec.name} has no group {name!r}{did_you_mean(name, valid)}; "
                    f"its groups: {', '.join(valid)}"
                )
        return {i for g, start, end in groups if g in trainable.groups for i in range(start, end)}
    if isinstance(trainable, LastLayers):
        return set(weighted[-trainable.last_layers:])
    if isinstance(trainable, Fraction):
        count = math.ceil(len(weighted) * trainable.fraction)
        return set(weighted[-count:])
    if isinstance(trainable, FromLayer):
        if trainable.from_layer not in names:
            raise TltoolError(
                f"trainable.from_layer: {spec.name} has no layer {trainable.from_layer!r}"
                f"{did_you_mean(trainable.from_layer, names)}; "
                f"list them with `tltool plan --backbone {spec.name} --layers`"
            )
        return set(range(names.index(trainable.from_layer), len(names)))
    if isinstance(trainable, Pattern):
        pattern = re.compile(trainable.pattern)
        found = {i for i, n in enumerate(names) if pattern.search(n)}
        if not found:
            raise TltoolError(
                f"trainable.pattern: {trainable.pattern!r} matches no layer of {spec.name}; "
                f"list them with `tltool plan --backbone {spec.name} --layers`"
            )
        return found
    raise TypeError(f"unknown trainable value {trainable!r}")


def apply_plan(backbone, plan: FreezePlan) -> None:
    """Set `trainable` on the backbone's layers; compile again afterwards."""
    if not plan.trains_backbone:
        backbone.trainable = False
        return
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = layer.name in plan.trainable
    for layer in batchnorm_layers(backbone):
        if plan.batchnorm == "frozen":
            layer.trainable = False
        original = layer.__dict__.setdefault("_tltool_momentum", layer.momentum)
        layer.momentum = plan.momentum or original


def batchnorm_layers(model):
    import keras

    return (layer for layer in every_layer(model) if isinstance(layer, keras.layers.BatchNormalization))


def every_layer(model):
    """Every layer of `model`, and of the models nested in it, depth first."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from every_layer(layer)


def count_params(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))
