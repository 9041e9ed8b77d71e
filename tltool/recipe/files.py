"""Recipe files: the shipped ones, reading and validating YAML, writing a resolved recipe back."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tltool.errors import RecipeError, TltoolError, did_you_mean
from tltool.recipe.messages import describe, relevant
from tltool.recipe.schema import DEFAULT_RECIPE, Recipe


def shipped_folder():
    """The shipped recipes: the top-level `recipes/` folder, installed as the package data `tltool.recipes`.

    In a source checkout (tests, `python -m tltool` from a clone) there is no
    `tltool.recipes` package, and the folder is read where it lies: one
    source of the shipped recipes, and no symlink (which a Windows checkout
    would break).
    """
    try:
        return resources.files("tltool.recipes")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "recipes"


def shipped_recipes() -> dict[str, str]:
    """Shipped recipe name -> file path."""
    folder = shipped_folder()
    return {
        entry.name[: -len(".yaml")]: str(entry)
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def resolve_recipe_path(name_or_path: str) -> str:
    """A recipe file path from a path or the name of a shipped recipe."""
    if os.path.isfile(name_or_path):
        return name_or_path
    shipped = shipped_recipes()
    key = name_or_path[: -len(".yaml")] if name_or_path.endswith(".yaml") else name_or_path
    if key in shipped:
        return shipped[key]
    raise TltoolError(
        f"recipe {name_or_path!r}: no such file and no shipped recipe of that name"
        f"{did_you_mean(key, shipped)}; shipped: {', '.join(shipped)}"
    )


def load_recipe(name_or_path: str = DEFAULT_RECIPE) -> Recipe:
    """Read and validate a recipe file or shipped recipe.

    Raises:
        RecipeError: one line per problem, each naming the file and key.
        TltoolError: no such file or shipped recipe.
    """
    import yaml

    path = resolve_recipe_path(name_or_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(path, [f"{where}not valid YAML ({problem})"]) from None
    except OSError as e:
        raise TltoolError(f"{path}: cannot read recipe ({e.strerror})") from None
    return recipe_from_dict(data, path)


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(source, ["a recipe must be a YAML mapping (key: value lines)"])
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(source, [describe(err) for err in e.errors() if relevant(err)]) from None


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["title"] = "tltool recipe"
    return schema


