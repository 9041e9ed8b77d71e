"""Pydantic's validation errors as one line per problem: the key path, what was received, what is allowed."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from tltool.errors import did_you_mean
from tltool.recipe.schema import _TRAINABLE_KINDS, Fraction, FromLayer, Groups, LastGroups, LastLayers, Pattern, Recipe

_UNION_TAGS = ("none", "all", "rate", "auto", "range")  # pydantic puts these in error locations; not keys

def _key_path(loc: tuple) -> str:
    """``('phases', 1, 'optimizer', 'name')`` -> ``phases[1].optimizer.name``.

    Pydantic puts union members in the location, as a type (``dict[str,...]``)
    or as a tag that repeats the key (``trainable.last_groups.last_groups``);
    both are dropped.
    """
    parts: list[str] = []
    previous = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item != previous and "[" not in item and item not in _UNION_TAGS:
            parts.append(f".{item}")
        previous = item
    return "".join(parts).lstrip(".") or "(top level)"


def relevant(err: dict) -> bool:
    """Drop the error of a union member the input was plainly not meant for."""
    given = err.get("input")
    if err["type"] == "literal_error" and isinstance(given, (dict, list)):
        return False
    return not (err["type"] == "dict_type" and isinstance(given, str))


def describe(err: dict) -> str:
    loc = tuple(err["loc"])
    kind, ctx, given = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = did_you_mean(loc[-1], parent.model_fields) if parent else ""
        allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        return f"{_key_path(loc)}: unknown key{hint}{allowed}"
    path = _key_path(loc)
    if kind == "missing":
        return f"{path}: required"
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "").replace("'", "")
        choices = re.findall(r"[\w-]+", expected)
        return f"{path}: must be one of {expected} (got {given!r}){did_you_mean(given, choices)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{path}: must be {op} {bound} (got {given!r})"
    if kind == "trainable":
        return f"{path}: {err['msg']} (got {given!r}){_trainable_hint(given)}"
    if kind == "learning_rate":
        return f"{path}: {err['msg']} (got {given!r})"
    if kind == "value_error":
        return f"{path}: {err['msg'].removeprefix('Value error, ')}"
    return f"{path}: {err['msg'][0].lower() + err['msg'][1:]} (got {given!r})"


def _trainable_hint(given: Any) -> str:
    if isinstance(given, dict) and len(given) == 1:
        return did_you_mean(next(iter(given)), _TRAINABLE_KINDS)
    if isinstance(given, str):
        return did_you_mean(given, ("none", "all"))
    return ""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model a location points into, for listing its keys."""
    model: Any = Recipe
    for item in loc:
        if isinstance(item, int) or model is None or item in _UNION_TAGS:
            continue
        if item in _TRAINABLE_KINDS:
            return {"last_groups": LastGroups, "groups": Groups, "last_layers": LastLayers,
                    "fraction": Fraction, "from_layer": FromLayer, "pattern": Pattern}[item]
        field = model.model_fields.get(item)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


