"""Everything a session trains, built and checked before any run folder exists.

`prepare` seeds Keras, sets the dtype policy, chooses the tf.distribute
strategy, builds the backbone with its starting weights and the classifier
around it (inside the strategy's scope), resolves every phase's freeze plan
and the class weights. Each of these can fail on bad input; a failure here
leaves nothing on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from tltool.console import say, warn


@dataclass
class Setup:
    """What a session trains.

    Attributes:
        recipe: the resolved recipe (backbone and image size filled in).
        dataset: the scanned, split dataset.
        task: the `tltool.tasks.base.Task`.
        dist: the `tltool.training.distribute.Distribution`.
        clf: the `tltool.models.classifier.Classifier`.
        mixer: MixUp/CutMix for the pipeline, or None.
        plans: each phase's `tltool.models.freeze.FreezePlan`.
        class_weights: Keras class weights for the training split, or None.
    """

    recipe: object
    dataset: object
    task: object
    dist: object
    clf: object
    mixer: object
    plans: list
    class_weights: dict | None


def prepare(recipe, spec, dataset, task, weights: str | None = None) -> Setup:
    """Build and check what a session trains.

    Args:
        spec: the backbone's `BackboneSpec`.
        weights: the backbone's starting weights; None takes the recipe's
            (a resumed run passes "none": it starts from its checkpoint).
    """
    import keras

    from tltool.models.augment import build_mixer
    from tltool.models.classifier import build_classifier
    from tltool.models.freeze import resolve_plan
    from tltool.training.distribute import choose

    keras.utils.set_random_seed(recipe.seed)
    _warn_if_cpu_only(recipe)
    keras.config.set_dtype_policy(recipe.precision)
    dist = choose(recipe.strategy, recipe.batch_size)
    if dist.name != "default":
        say(dist.describe(recipe.batch_size))
    with dist.scope():  # variables made here are mirrored on every replica
        backbone = spec.build(recipe.image_size, weights or recipe.weights)
        clf = build_classifier(backbone, len(dataset.classes), recipe.image_size, recipe.head, recipe.augment,
                               recipe.seed, task.activation)
    plans = [resolve_plan(backbone, p.trainable, p.batchnorm, p.batchnorm_momentum) for p in recipe.phases]
    return Setup(recipe, dataset, task, dist, clf, build_mixer(recipe.augment, recipe.seed), plans,
                 task.class_weights(recipe, dataset))


def _warn_if_cpu_only(recipe) -> None:
    """Mixed precision and XLA are for accelerators; on a CPU they cost time."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    if recipe.precision != "float32":
        warn(f"precision {recipe.precision} on a CPU is slower than float32 (benchmarks/speed.py: 0.67x "
             "mixed_bfloat16, 0.21x mixed_float16); it is meant for GPUs")
    if recipe.jit_compile:
        warn("--jit-compile on a CPU is much slower than without (benchmarks/speed.py: 0.06x); it is meant for GPUs")


def describe_groups(groups: list[tuple[str, int, int]]) -> str:
    """'none', or the groups that train, e.g. 'stage3, stage4 (12/30 layers)'."""
    parts = [name if n == total else f"{name} ({n}/{total} layers)" for name, n, total in groups if n]
    if not parts:
        return "none"
    if len(parts) == len(groups) and all(n == t for _, n, t in groups):
        return f"all {len(groups)} groups"
    return ", ".join(parts)
