"""`plan`, `recipes validate` and `backbones` as functions: what a recipe does to a backbone, before training.

They return objects; `tltool.cli` renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tltool.errors import RecipeError
from tltool.models.backbone import BackboneSpec
from tltool.models.freeze import (
    apply_plan,
    batchnorm_layers,
    count_params,
    layer_problems,
    needs_layer_names,
    resolve_plan,
    static_problems,
)
from tltool.models.registry import all_backbones, get_backbone
from tltool.recipe import load_recipe, resolve_recipe_path
from tltool.recipe.schema import RateRange
from tltool.tasks import check_monitor, get_task
from tltool.training.setup import describe_groups


@dataclass
class PhasePlan:
    """One phase of a plan: what trains, what it costs, and each group's learning rate."""

    name: str
    epochs: int
    groups: str  # described: 'none', 'all 5 groups', 'stage3, stage4 (12/30 layers)'
    batchnorm: str
    trainable: int  # parameters, the head's included
    frozen: int
    optimizer: str
    rates: dict[str, float] | str  # group -> rate (head under "head"), or "auto"
    discriminative: bool = False  # {low, high}: a rate per group

    @property
    def share(self) -> float:
        return self.trainable / (self.trainable + self.frozen)


@dataclass
class Plan:
    """What a recipe trains on a backbone, phase by phase."""

    spec: BackboneSpec
    recipe: str
    head: list[int]  # layer widths: features, hidden..., classes
    head_params: int
    phases: list[PhasePlan]
    layers: list[tuple[int, str, str, str, int]] = field(default_factory=list)  # index, group, name, type, params
    has_batchnorm: bool = True


def plan(backbone: str | None = None, recipe: str | None = None, classes: int = 10,
         image_size: int | None = None) -> Plan:
    """Per phase of `recipe` on `backbone`: the groups that train, the parameters, the learning rates.

    The backbone is built without weights, at `image_size` or a small size (parameters of most backbones
    do not depend on it).
    """
    from tltool.models.weights import check_image_size
    from tltool.training.optim import group_rates
    from tltool.workflows.resolving import DEFAULT_BACKBONE

    loaded = load_recipe(recipe) if recipe else load_recipe()
    spec = get_backbone(backbone or loaded.backbone or DEFAULT_BACKBONE)
    if image_size is not None:
        check_image_size(spec, image_size)
    built = spec.build(image_size or check_size(spec), "none")
    pool = built.pooling(loaded.head.pooling)  # SigLIP's attention-pooling head has weights of its own
    width = pool.compute_output_shape(tuple(built.model.output.shape))[-1]
    sizes = [width, *loaded.head.hidden_units, classes]
    head = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    phases = []
    for phase in loaded.phases:
        p = resolve_plan(built, phase.trainable, phase.batchnorm, phase.batchnorm_momentum)
        apply_plan(built, p)
        rate = phase.optimizer.learning_rate
        phases.append(PhasePlan(
            phase.name, phase.epochs, describe_groups(p.groups), p.batchnorm,
            count_params(built.model.trainable_weights + pool.trainable_weights) + head,
            count_params(built.model.non_trainable_weights + pool.non_trainable_weights),
            phase.optimizer.name, "auto" if rate == "auto" else group_rates(rate, p.training_groups),
            isinstance(rate, RateRange)))
    layers = [(i, group, layer.name, type(layer).__name__, count_params(layer.weights))
              for i, (group, layer) in enumerate(built.units)]
    return Plan(spec, loaded.name, sizes, head, phases, layers, any(True for _ in batchnorm_layers(built.model)))


def check_size(spec: BackboneSpec) -> int:
    """The size a backbone is built at for checks and plans: its minimum, or 32 px."""
    return max(spec.min_size, 32)


@dataclass
class Validation:
    path: str
    phases: list[tuple[str, int]]
    backbone: str | None  # what the recipe was checked against


def validate_recipe(file: str, backbone: str | None = None) -> Validation:
    """Check a recipe file (and, with a backbone, its group and layer names) without training.

    Raises:
        RecipeError: one line per problem.
    """
    recipe = load_recipe(file)
    path = resolve_recipe_path(file)
    if recipe.task != "auto":  # the task is known without data: its monitors are too
        check_monitor(recipe, get_task(recipe.task), path)
    name = backbone or recipe.backbone
    spec = get_backbone(name) if name else None
    if spec is not None:
        problems = static_problems(spec, recipe)
        if needs_layer_names(recipe):
            from tltool.console import load_tensorflow

            load_tensorflow()
            problems += layer_problems(spec.build(check_size(spec), "none"), recipe)
        if problems:
            raise RecipeError(path, problems)
    return Validation(path, [(p.name, p.epochs) for p in recipe.phases], spec.name if spec else None)


def backbones() -> list[BackboneSpec]:
    """Every backbone tltool can fine-tune (static data: no TensorFlow)."""
    return all_backbones()
