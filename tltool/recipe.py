"""Recipes: the whole training plan as a validated YAML file.

A recipe says which backbone layers train in which phase, for how long, with
which optimizer, schedule, augmentation and regularisation. Files are read
with `yaml.safe_load` (a recipe can never run code) and validated with
pydantic; every problem is reported with the file, the key path
(``phases[1].optimizer.learning_rate``) and what is allowed.

Precedence, lowest first: the field defaults below < the recipe file < flags
on the command line (`apply_overrides`).
"""

from __future__ import annotations

import math
import os
import re
from importlib import resources
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from tltool.errors import RecipeError, TltoolError, did_you_mean

DEFAULT_RECIPE = "fine-tune"
IMBALANCE_THRESHOLD = 1.5
_TRAINABLE_KINDS = ("last_groups", "groups", "last_layers", "fraction", "from_layer", "pattern")
_UNION_TAGS = ("none", "all", "rate", "auto", "range")  # pydantic puts these in error locations; not keys


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Head(_Strict):
    """The new classifier on top of the backbone."""

    pooling: Literal["avg", "max"] = Field("avg", description="global pooling of the backbone's feature map")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before each dense layer")
    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list, description="sizes of optional hidden dense layers"
    )
    activation: Literal["relu", "gelu", "swish", "tanh"] = "relu"


class Augment(_Strict):
    """Random changes to training images (core Keras 3 preprocessing layers, training only).

    The defaults cannot change what an image means on any common domain:
    no flips (a mirrored "2", an X-ray's left side, an arrow or a label are
    different things); turn flips on for photos of things that are the same
    in a mirror. `mixup` and `cutmix` mix two images and their labels, so
    they run in the input pipeline, and a phase that uses them trains end to
    end instead of on cached features.
    """

    flip: Literal["none", "horizontal", "vertical", "both"] = Field(
        "none", description="mirror images at random; horizontal suits most photos, none suits text, digits, scans"
    )
    rotation: float = Field(0.0, ge=0, le=0.5, description="max rotation, as a fraction of a full turn")
    zoom: float = Field(0.0, ge=0, lt=1, description="max zoom in/out, as a fraction")
    translate: float = Field(0.0, ge=0, lt=1, description="max shift, as a fraction of the size")
    contrast: float = Field(0.0, ge=0, le=1)
    brightness: float = Field(0.0, ge=0, le=1)
    color_jitter: float = Field(
        0.0, ge=0, le=1, description="RandomColorJitter: brightness, contrast and saturation by up to this "
        "fraction, hue by a quarter of it"
    )
    rand_augment: int = Field(0, ge=0, le=10, description="RandAugment: random operations per image (0 = off)")
    rand_augment_magnitude: float = Field(0.5, gt=0, le=1, description="RandAugment: strength of each operation")
    aug_mix: float = Field(0.0, ge=0, le=1, description="AugMix: strength of the mixed chains (0 = off)")
    random_erasing: float = Field(0.0, ge=0, le=1, description="RandomErasing: probability of erasing a patch")
    mixup: float = Field(0.0, ge=0, le=10, description="MixUp: Beta(alpha, alpha) mixing of image pairs and "
                         "their labels (0 = off; 0.2 is usual)")
    cutmix: float = Field(0.0, ge=0, le=10, description="CutMix: Beta(alpha, alpha) pasted patches with mixed "
                          "labels (0 = off; 1.0 is usual)")
    cached_views: int = Field(
        1, ge=1, le=32,
        description="augmented views per image computed once when a frozen phase trains on cached features "
        "(epoch e uses view e mod N); each view costs one pass of the backbone",
    )

    @property
    def mixes_labels(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


class RateRange(_Strict):
    """Discriminative learning rates (fastai's `slice(low, high)`).

    The head trains at `high`, the first trainable freeze group of the
    backbone at `low`, and the groups between at rates spread geometrically.
    """

    low: float = Field(gt=0, le=10, description="rate of the earliest trainable backbone group")
    high: float = Field(gt=0, le=10, description="rate of the head (and of the whole model in a frozen phase)")

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info) -> float:
        low = info.data.get("low")
        if low is not None and high < low:
            raise ValueError(f"high ({high:g}) must be at least low ({low:g})")
        return high


def _rate_tag(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "rate"
    if isinstance(value, (dict, RateRange)):
        return "range"
    return "auto" if value == "auto" else None


LearningRate = Annotated[
    Union[
        Annotated[Annotated[float, Field(gt=0, le=10)], Tag("rate")],
        Annotated[Literal["auto"], Tag("auto")],
        Annotated[RateRange, Tag("range")],
    ],
    Discriminator(
        _rate_tag,
        custom_error_type="learning_rate",
        custom_error_message="must be a number, auto, or {low: N, high: N}",
    ),
]


class Optimizer(_Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: LearningRate = Field(
        1e-3, description="a rate; auto (the learning-rate finder picks it before the phase); or {low, high}: "
        "discriminative rates, low for the earliest trainable group, high for the head"
    )
    weight_decay: float | None = Field(None, ge=0, description="decoupled weight decay (adamw default 0.004)")
    momentum: float = Field(0.9, ge=0, lt=1, description="for sgd and rmsprop")

    @property
    def top_rate(self) -> float | None:
        """The head's rate (the schedule's base rate); None while it is `auto`."""
        rate = self.learning_rate
        return rate.high if isinstance(rate, RateRange) else None if rate == "auto" else float(rate)


class Schedule(_Strict):
    """How the learning rate changes over a phase (per step, epochs as units)."""

    name: Literal["constant", "cosine", "exponential", "step"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up to the full rate over the phase's first epochs")
    min_fraction: float = Field(0.0, ge=0, le=1, description="cosine: final rate as a fraction of the start")
    decay_rate: float = Field(0.5, gt=0, le=1, description="exponential: factor per epoch; step: factor per step")
    step_epochs: int = Field(3, ge=1, description="step: epochs between drops")


class LastGroups(_Strict):
    last_groups: int = Field(ge=1, description="the last N freeze groups of the backbone")


class Groups(_Strict):
    groups: list[str] = Field(min_length=1, description="named freeze groups, e.g. [stage3, stage4]")


class LastLayers(_Strict):
    last_layers: int = Field(ge=1, description="the last N backbone layers that have weights")


class Fraction(_Strict):
    fraction: float = Field(gt=0, le=1, description="the top fraction of the backbone's weighted layers")


class FromLayer(_Strict):
    from_layer: str = Field(description="this layer and every layer after it")


class Pattern(_Strict):
    pattern: str = Field(description="layers whose name matches this regular expression (re.search)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        return value


def _trainable_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value in ("none", "all") else None
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if key in _TRAINABLE_KINDS else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Trainable = Annotated[
    Union[
        Annotated[Literal["none"], Tag("none")],
        Annotated[Literal["all"], Tag("all")],
        Annotated[LastGroups, Tag("last_groups")],
        Annotated[Groups, Tag("groups")],
        Annotated[LastLayers, Tag("last_layers")],
        Annotated[Fraction, Tag("fraction")],
        Annotated[FromLayer, Tag("from_layer")],
        Annotated[Pattern, Tag("pattern")],
    ],
    Discriminator(
        _trainable_tag,
        custom_error_type="trainable",
        custom_error_message="must be none, all, or a mapping with one key: " + ", ".join(_TRAINABLE_KINDS),
    ),
]


class Phase(_Strict):
    name: str = Field(min_length=1)
    epochs: int = Field(ge=1)
    trainable: Trainable = Field("none", description="what of the backbone trains; the head always trains")
    batchnorm: Literal["frozen", "train"] = Field(
        "frozen",
        description="frozen: BatchNorm layers stay in inference mode and keep their statistics; "
        "train: those in the trainable part update them",
    )
    batchnorm_momentum: float | None = Field(
        None, gt=0, lt=1,
        description="moving-average momentum of training BatchNorm layers; null keeps the backbone's own "
        "(0.999 for MobileNetV2, too slow when training from scratch)",
    )
    optimizer: Optimizer = Field(default_factory=Optimizer)
    schedule: Schedule = Field(default_factory=Schedule)
    early_stopping: bool = Field(
        True, description="stop this phase when the recipe's early_stopping monitor stops improving; false runs "
        "every epoch (a decaying schedule often ends on its best ones); the best epoch is restored either way"
    )

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_shorthand(cls, value):
        return {"name": value} if isinstance(value, str) else value


class EarlyStopping(_Strict):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class Data(_Strict):
    val_split: float = Field(0.2, ge=0, lt=1, description="fraction of each class for validation (unsplit data)")
    test_split: float = Field(0.0, ge=0, lt=1, description="fraction of each class for test (unsplit data)")
    aspect: Literal["stretch", "crop", "pad"] = "stretch"
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="decoded images: memory when they fit in a quarter of RAM, else disk"
    )


class Recipe(_Strict):
    """A complete, validated training plan."""

    name: str = "custom"
    description: str = ""
    backbone: str | None = Field(None, description="registry name; --backbone overrides")
    weights: str = Field("imagenet", description="imagenet, none, or a path to a weights file")
    image_size: int | None = Field(None, ge=16, le=2048, description="null = the backbone's default size")
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = Field(1337, ge=0)
    head: Head = Field(default_factory=Head)
    augment: Augment = Field(default_factory=Augment)
    phases: list[Phase] = Field(min_length=1)
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    class_weight: Literal["none", "auto"] | dict[str, Annotated[float, Field(gt=0)]] = Field(
        "none", description="auto: inverse-frequency weights, only when the largest training class has at "
        f"least {IMBALANCE_THRESHOLD}x the images of the smallest; or a mapping class -> weight"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    calibrate: bool = Field(
        True, description="fit a temperature on the validation split after training and store it in the model, "
        "so that its confidence matches its accuracy"
    )
    export_weights: Literal["best", "last"] = Field(
        "best", description="best: the best epoch by the early-stopping monitor across all phases; last: the final epoch"
    )
    cache_features: bool = Field(True, description="train frozen phases on backbone features computed once")
    data: Data = Field(default_factory=Data)
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: bool = False
    strategy: Literal["auto", "default", "mirrored", "multi-worker"] = Field(
        "auto", description="tf.distribute strategy: auto (mirrored over this machine's GPUs when it has "
        "several), default, mirrored, or multi-worker (machines named in TF_CONFIG); batch_size is the global batch"
    )
    provenance: dict[str, Any] | None = Field(None, description="written by tltool fit; ignored when read")

    @field_validator("phases")
    @classmethod
    def _unique_names(cls, phases: list[Phase]) -> list[Phase]:
        names = [p.name for p in phases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"phase names must be unique; repeated: {', '.join(duplicates)}")
        return phases


# ---------------------------------------------------------------- loading


def shipped_recipes() -> dict[str, str]:
    """Shipped recipe name -> file path."""
    folder = resources.files("tltool.recipes")
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
        raise RecipeError(source, [_describe(err) for err in e.errors() if _relevant(err)]) from None


def dump_recipe(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["title"] = "tltool recipe"
    return schema


# ---------------------------------------------------------------- errors


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


def _relevant(err: dict) -> bool:
    """Drop the error of a union member the input was plainly not meant for."""
    given = err.get("input")
    if err["type"] == "literal_error" and isinstance(given, (dict, list)):
        return False
    return not (err["type"] == "dict_type" and isinstance(given, str))


def _describe(err: dict) -> str:
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


# ---------------------------------------------------------------- overrides


def apply_overrides(recipe: Recipe, **flags: Any) -> Recipe:
    """Return a copy of `recipe` with command-line flags applied.

    Flags (each None = not given): backbone, weights, image_size, batch_size,
    seed, epochs (N: every phase; xF: scale every phase; name=N,...: per
    phase), learning_rate (X: the first phase's rate becomes X and the others
    keep their ratio to it; xF: scale every phase), val_split, test_split,
    aspect, precision, jit_compile, cache_features, strategy.

    Raises:
        TltoolError: a flag value that is not allowed, naming the flag.
    """
    data = recipe.model_dump()
    simple = {"backbone": None, "weights": None, "image_size": None, "batch_size": None, "seed": None,
              "precision": None, "jit_compile": None, "cache_features": None, "strategy": None}
    for key in simple:
        if flags.get(key) is not None:
            data[key] = flags[key]
    for key in ("val_split", "test_split", "aspect"):
        if flags.get(key) is not None:
            data["data"][key] = flags[key]
    if flags.get("epochs") is not None:
        _override_epochs(data["phases"], str(flags["epochs"]))
    if flags.get("learning_rate") is not None:
        _override_learning_rate(data["phases"], str(flags["learning_rate"]))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors() if _relevant(err)]
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
