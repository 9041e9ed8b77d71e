"""Recipes: the whole training plan as a validated YAML file.

`schema` defines the format (pydantic), `files` reads and writes recipe
files and finds the shipped ones, `messages` turns validation errors into
one line per problem, `overrides` applies command-line flags.
"""

from tltool.recipe.files import (
                                 dump_recipe,
                                 json_schema,
                                 load_recipe,
                                 recipe_from_dict,
                                 resolve_recipe_path,
                                 shipped_recipes,
)
from tltool.recipe.overrides import apply_overrides
from tltool.recipe.schema import DEFAULT_RECIPE, IMBALANCE_THRESHOLD, Recipe

__all__ = ["DEFAULT_RECIPE", "IMBALANCE_THRESHOLD", "Recipe", "apply_overrides", "dump_recipe", "json_schema",
           "load_recipe", "recipe_from_dict", "resolve_recipe_path", "shipped_recipes"]
