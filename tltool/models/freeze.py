"""Freeze plans: which backbone layers train in a phase, and applying that to Keras.

Keras 3 semantics we rely on: ``layer.trainable = False`` stops weight
updates, and a BatchNormalization layer that is not trainable also runs in
inference mode (its moving statistics stay put). Setting ``trainable`` on a
layer sets it on every layer inside, so a plan first unfreezes the backbone,
then sets each unit of its freeze groups (`Backbone.units`, which may be
nested layers) on or off. The model must be compiled again afterwards.
"""

from __future__ import annotations

import math
import re
import weakref
from dataclasses import dataclass

from tltool.errors import TltoolError, did_you_mean
from tltool.models.backbone import Backbone, BackboneSpec
from tltool.models.weights import check_image_size
from tltool.recipe.schema import Fraction, FromLayer, Groups, LastGroups, LastLayers, Pattern

# Each BatchNorm layer's own momentum, before a plan changed it (kept beside the layer, not in it).
_ORIGINAL_MOMENTUM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclass
class FreezePlan:
    """The outcome of a phase's `trainable` and `batchnorm` settings.

    Attributes:
        trainable: indices into `Backbone.units` of the layers that train.
        batchnorm: frozen | train.
        momentum: BatchNorm momentum while training; None keeps the backbone's.
        groups: per freeze group: (name, weighted layers training, weighted layers).
    """

    trainable: set[int]
    batchnorm: str
    groups: list[tuple[str, int, int]]
    momentum: float | None = None

    @property
    def trains_backbone(self) -> bool:
        return bool(self.trainable)

    @property
    def training_groups(self) -> list[str]:
        return [name for name, n, _ in self.groups if n]


def group_problems(spec: BackboneSpec, trainable) -> list[str]:
    """What is wrong with a `trainable` value's group names or count for this backbone (the one check)."""
    names = list(spec.group_names)
    if isinstance(trainable, LastGroups) and trainable.last_groups > len(names):
        return [f"last_groups: {spec.name} has {len(names)} groups, not {trainable.last_groups}; "
                f"give at most {len(names)}, or trainable: all"]
    if isinstance(trainable, Groups):
        return [f"groups: {spec.name} has no group {name!r}{did_you_mean(name, names)}; its groups: {', '.join(names)}"
                for name in trainable.groups if name not in names]
    return []


def static_problems(spec: BackboneSpec, recipe) -> list[str]:
    """What can be checked against a backbone without building it: group names, image size."""
    problems = [f"phases[{i}].trainable.{problem}" for i, phase in enumerate(recipe.phases)
                for problem in group_problems(spec, phase.trainable)]
    if recipe.image_size is not None:
        try:
            check_image_size(spec, recipe.image_size)
        except TltoolError as e:
            problems.append(f"image_size: {e}")
    return problems


def layer_problems(backbone: Backbone, recipe) -> list[str]:
    """Every phase's layer-name problem (from_layer, pattern) against a built backbone, with its key path."""
    problems = []
    for i, phase in enumerate(recipe.phases):
        if isinstance(phase.trainable, (FromLayer, Pattern)):
            try:
                resolve_plan(backbone, phase.trainable)
            except TltoolError as e:
                problems.append(f"phases[{i}].{e}")
    return problems


def needs_layer_names(recipe) -> bool:
    """Whether checking the recipe against a backbone needs the built model."""
    return any(isinstance(p.trainable, (FromLayer, Pattern)) for p in recipe.phases)


def resolve_plan(backbone: Backbone, trainable, batchnorm: str = "frozen", momentum: float | None = None) -> FreezePlan:
    """Turn a recipe's `trainable` value into the units that train.

    Raises:
        TltoolError: a group or layer name that the backbone does not have,
            or a pattern that matches no layer; the message lists valid names.
    """
    units = backbone.units
    weighted = [i for i, (_, layer) in enumerate(units) if layer.weights]
    chosen = _choose(backbone, trainable, [layer.name for _, layer in units], weighted)
    summary = []
    for group in backbone.groups:
        members = [i for i in weighted if units[i][0] == group.name]
        summary.append((group.name, sum(1 for i in members if i in chosen), len(members)))
    return FreezePlan(chosen, batchnorm, summary, momentum)


def _choose(backbone: Backbone, trainable, names: list[str], weighted: list[int]) -> set[int]:
    spec, units = backbone.spec, backbone.units
    if trainable == "none":
        return set()
    if trainable == "all":
        return set(range(len(units)))
    problems = group_problems(spec, trainable)
    if problems:
        raise TltoolError(f"trainable.{problems[0]}")
    if isinstance(trainable, LastGroups):
        picked = {g.name for g in backbone.groups[-trainable.last_groups:]}
        return {i for i, (group, _) in enumerate(units) if group in picked}
    if isinstance(trainable, Groups):
        return {i for i, (group, _) in enumerate(units) if group in trainable.groups}
    if isinstance(trainable, LastLayers):
        return set(weighted[-trainable.last_layers:])
    if isinstance(trainable, Fraction):
        return set(weighted[-math.ceil(len(weighted) * trainable.fraction):])
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


def apply_plan(backbone: Backbone, plan: FreezePlan) -> None:
    """Set `trainable` on the backbone's layers; compile again afterwards."""
    model = backbone.model
    if not plan.trains_backbone:
        model.trainable = False
        for _, layer in backbone.units:  # a unit may sit outside the network: SigLIP's attention-pooling head
            layer.trainable = False
        return
    model.trainable = True
    for i, (_, layer) in enumerate(backbone.units):
        layer.trainable = i in plan.trainable
    for layer in batchnorm_layers(model):
        if plan.batchnorm == "frozen":
            layer.trainable = False
        original = _ORIGINAL_MOMENTUM.setdefault(layer, layer.momentum)
        layer.momentum = plan.momentum or original


def batchnorm_layers(model):
    import keras

    return (layer for layer in every_layer(model) if isinstance(layer, keras.layers.BatchNormalization))


def every_layer(model):
    """Every layer of `model`, and of the layers nested in it, depth first."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from every_layer(layer)


def count_params(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))
