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

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

DEFAULT_RECIPE = "fine-tune"
IMBALANCE_THRESHOLD = 1.5
_TRAINABLE_KINDS = ("last_groups", "groups", "last_layers", "fraction", "from_layer", "pattern")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Head(_Strict):
    """The new classifier on top of the backbone."""

    pooling: Literal["auto", "avg", "max", "token", "token+avg", "attention"] = Field(
        "auto", description="one vector per image from the backbone's output: auto (the backbone's own: avg for a "
        "feature map, the class token for ViT/DeiT/CLIP, token+avg for DINOv2/v3, attention for SigLIP), avg or max "
        "(over the feature map or the patch tokens), token (a transformer's class token), token+avg (both, "
        "concatenated), attention (SigLIP's attention-pooling head)")
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
    monitor: Literal["val_loss", "val_accuracy", "val_pr_auc"] = Field(
        "val_loss", description="val_loss, val_accuracy (single-label) or val_pr_auc (multi-label: Keras' area under "
        "the precision-recall curve, near the report's mAP; val_mean_average_precision, its old name, is read as it)")
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True

    @field_validator("monitor", mode="before")
    @classmethod
    def _old_name(cls, value):
        return "val_pr_auc" if value == "val_mean_average_precision" else value


class Data(_Strict):
    val_split: float = Field(0.2, ge=0, lt=1, description="fraction of each class for validation (unsplit data)")
    test_split: float = Field(0.0, ge=0, lt=1, description="fraction of each class for test (unsplit data)")
    aspect: Literal["stretch", "crop", "pad"] = "stretch"
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto", description="decoded images: memory when they fit in a quarter of RAM, else disk"
    )
    check_leakage: bool = Field(
        True, description="find validation and test images with a copy in an earlier split (exact, or near by perceptual "
        "hash), say how many and list them in data/leakage.csv"
    )


class Recipe(_Strict):
    """A complete, validated training plan."""

    name: str = "custom"
    description: str = ""
    task: Literal["auto", "single-label", "multi-label"] = Field(
        "auto", description="auto: multi-label when the dataset is a CSV with a labels column or one-hot columns, "
        "else single-label (one class per image)")
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
    explain: bool = Field(
        True, description="show each image of the report's gallery of mistakes beside its Grad-CAM heatmap for the "
        "predicted class"
    )
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
