"""What every command that reads a dataset resolves first: the recipe (with its flags, backbone and image size),
the recipe a dataset takes by default, and the lines that describe the dataset.

`fit`, `lr-find`, `audit` and `inspect` share these, so that each reads and splits a dataset as `fit` does.
"""

from __future__ import annotations

from tltool.console import say, warn
from tltool.data.dataset import Dataset, describe_skipped
from tltool.errors import RecipeError, TltoolError
from tltool.models.freeze import static_problems
from tltool.models.registry import get_backbone
from tltool.models.weights import check_image_size
from tltool.recipe import DEFAULT_RECIPE, Recipe, apply_overrides, load_recipe

DEFAULT_BACKBONE = "efficientnetb0"


def resolve_recipe(recipe: str | Recipe | None = None, **overrides) -> Recipe:
    """Load a recipe (default: fine-tune), apply flags, fill in backbone and image size.

    Raises:
        RecipeError: every problem of the recipe against its backbone, at once.
    """
    base = recipe if isinstance(recipe, Recipe) else load_recipe(recipe or DEFAULT_RECIPE)
    resolved = apply_overrides(base, **overrides)
    spec = get_backbone(resolved.backbone or DEFAULT_BACKBONE)
    size = resolved.image_size or spec.default_size
    check_image_size(spec, size)
    resolved = resolved.model_copy(update={"backbone": spec.name, "image_size": size})
    problems = static_problems(spec, resolved)
    if problems:
        raise RecipeError(recipe if isinstance(recipe, str) else resolved.name, problems)
    return resolved


MULTI_LABEL_RECIPE = "multi-label"


def default_recipe_for(data: str | None) -> str:
    """The recipe a run takes when none is given: `multi-label` for a CSV with several labels per image, else
    the default (`fine-tune`)."""
    from tltool.data.scan import csv_has_several_labels

    return MULTI_LABEL_RECIPE if data and csv_has_several_labels(data) else DEFAULT_RECIPE


def report_dataset(dataset: Dataset, duplicates_file: str | None = None) -> None:
    sizes = ", ".join(f"{split} {n}" for split, n in dataset.images().items() if n) or "0"
    kind = ", several labels per image" if dataset.multi_label else ""
    say(f"dataset {dataset.root}: {len(dataset.classes)} classes, {sizes} images ({dataset.layout} layout{kind})")
    if dataset.skipped:
        warn(describe_skipped(dataset.skipped))
    if dataset.hidden:
        say(f"ignored {dataset.hidden} hidden file(s) and folder(s)")
    from tltool.data.summary import duplicate_warnings

    for message in dataset.warnings + duplicate_warnings(dataset, duplicates_file):
        warn(message)


def require_outside(path: str, dataset: Dataset, flag: str) -> None:
    """`path` lies outside every folder that holds the dataset's images, so that nothing tltool writes is ever
    read back as data (`fit`'s run folder, `audit`'s findings and clean CSV).

    Raises:
        TltoolError: naming the folder, and the same place beside the data instead.
    """
    import os

    from tltool.files import containing_folder

    inside = containing_folder(path, dataset.image_folders())
    if inside:
        below = os.path.relpath(os.path.realpath(path), os.path.realpath(inside))
        beside = os.path.join(os.path.dirname(dataset.root.rstrip(os.sep)) or os.sep, below)
        raise TltoolError(f"{flag} {path}: inside {inside}, which holds the dataset's images; tltool never writes "
                          f"under the data: give a path elsewhere (e.g. {beside})")
