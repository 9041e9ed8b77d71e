"""One table of options per command: it makes the Click options and the Python signature, and marks the recipe overrides.

`tltool fit --help`, `help(tltool.fit)` and `inspect.signature(tltool.fit)`
come from the same rows, so a flag and a keyword argument can never drift
apart, and a misspelt keyword is a TypeError before anything is scanned.
The rows marked `recipe` are passed on to `tltool.recipe.apply_overrides`; a
test keeps them equal to what it takes (`tltool.recipe.overrides.OVERRIDES`):

    >>> tltool.fit("data/", epoch=3)
    TypeError: unexpected keyword argument 'epoch'; did you mean 'epochs'?
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from tltool.errors import did_you_mean


@dataclass(frozen=True)
class Option:
    """One option of a command.

    Attributes:
        name: the Python keyword (and, with dashes, the flag).
        annotation: the Python type, as text for the signature.
        help: one line, for --help and the docstring.
        default: None means "not given": the recipe (or the command) decides.
        click: extra arguments for `click.option` (type, is_flag, ...).
        flags: the flag spellings; default ``--name-with-dashes``.
        recipe: an override of the recipe (one of `tltool.recipe.overrides.OVERRIDES`).
        cli / python: whether the command line / the Python API offers it.
        minimum: the smallest value it takes (a count), checked by `Command.check` for the CLI and the API.
    """

    name: str
    annotation: str
    help: str
    default: Any = None
    click: dict | None = None
    flags: tuple[str, ...] = ()
    recipe: bool = False
    cli: bool = True
    python: bool = True
    minimum: int | None = None

    @property
    def spellings(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name.replace('_', '-')}",)


@dataclass(frozen=True)
class Command:
    name: str
    options: tuple[Option, ...]

    def python_names(self) -> list[str]:
        return [o.name for o in self.options if o.python]

    def check(self, kwargs: dict) -> None:
        """The one check of a call's options, from the command line or Python.

        Raises:
            TypeError: a keyword this command does not take, with the closest one.
            TltoolError: a value below its option's minimum, named as the flag.
        """
        from tltool.errors import TltoolError

        known = self.python_names()
        for key in kwargs:
            if key not in known:
                raise TypeError(f"unexpected keyword argument {key!r}{_close(key, known)}")
        for option in self.options:
            value = kwargs.get(option.name)
            if option.minimum is not None and value is not None and value < option.minimum:
                raise TltoolError(f"{option.spellings[0]} {value}: give {option.minimum} or more")

    def click_options(self, function: Callable) -> Callable:
        """Decorate a Click command with every option the command line offers."""
        import click

        for option in reversed([o for o in self.options if o.cli]):
            extra = dict(option.click or {})
            if extra.pop("path", False):
                extra["type"] = click.Path()
            if "choice" in extra:
                extra["type"] = click.Choice(extra.pop("choice"))
            extra.setdefault("default", option.default)  # None: not given, so the recipe decides
            if option.default is not None:
                extra.setdefault("show_default", True)
            shown = option.help
            if option.recipe and option.default is None and "[default" not in shown:
                shown += " [default: the recipe's]"
            function = click.option(*option.spellings, option.name, help=shown, **extra)(function)
        return function

    def api(self, *positional: str, returns: str = "") -> Callable:
        """Give a Python API function this command's signature, docstring and keyword check."""
        def wrap(function: Callable) -> Callable:
            @functools.wraps(function)
            def checked(*args, **kwargs):
                self.check(kwargs)
                return function(*args, **kwargs)

            parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in positional]
            parameters += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                                             annotation=o.annotation) for o in self.options if o.python]
            checked.__signature__ = inspect.Signature(parameters, return_annotation=returns or inspect.Signature.empty)
            lines = [f"    {o.name} ({o.annotation}): {o.help}" for o in self.options if o.python]
            checked.__doc__ = (function.__doc__ or "").rstrip() + "\n\nKeyword arguments:\n" + "\n".join(lines) + "\n"
            return checked

        return wrap


def _close(word: str, choices: list[str]) -> str:
    hint = did_you_mean(word, choices, n=1)
    return f"; did you mean {hint[len(' (did you mean: '):-2]!r}?" if hint else ""


_CHOICES = {"aspect": ("stretch", "crop", "pad"), "precision": ("float32", "mixed_float16", "mixed_bfloat16"),
            "strategy": ("auto", "default", "mirrored", "multi-worker")}


TRAINING = (
    Option("backbone", "str | None", "Registry name, e.g. resnet50 (see `tltool backbones`). [default: efficientnetb0]",
           flags=("--backbone", "-b"), recipe=True),
    Option("recipe", "str | Recipe | None", "Shipped recipe name or YAML path (or a Recipe). [default: fine-tune; "
           "multi-label for a CSV with several labels per image]", flags=("--recipe", "-r")),
    Option("weights", "str | None", "imagenet, none, or a .weights.h5/.h5 file for the backbone. [default: imagenet]",
           recipe=True),
    Option("batch_size", "int | None", "Images per batch.", click={"type": int}, recipe=True),
    Option("image_size", "int | None", "Input side in pixels. [default: the backbone's]", click={"type": int},
           recipe=True),
    Option("seed", "int | None", "Seed for the split, shuffling, initialisation and augmentation.",
           click={"type": int}, recipe=True),
    Option("val_split", "float | None", "Fraction of each class for validation (unsplit data).",
           click={"type": float}, recipe=True),
    Option("split_from", "str | None", "Reuse the train/val/test split of an earlier run directory.",
           click={"path": True}),
)

FIT = Command("fit", (
    *TRAINING,
    Option("epochs", "int | str | None", "N for every phase, xF to scale every phase, or name=N,name=N.",
           recipe=True),
    Option("learning_rate", "float | str | None",
           "First phase's rate (later phases keep their ratio), or xF to scale all.",
           flags=("--learning-rate", "--lr"), recipe=True),
    Option("test_split", "float | None", "Fraction of each class for test (unsplit data).", click={"type": float},
           recipe=True),
    Option("aspect", "str | None", "Aspect-ratio policy when resizing: stretch, crop or pad.",
           click={"choice": _CHOICES["aspect"]}, recipe=True),
    Option("check_leakage", "bool | None",
           "Find validation and test images with a copy in an earlier split. [default: on]",
           flags=("--check-leakage/--no-check-leakage",), recipe=True),
    Option("precision", "str | None", "Keras dtype policy; mixed_* for GPUs.",
           click={"choice": _CHOICES["precision"]}, recipe=True),
    Option("jit_compile", "bool | None", "XLA-compile the training step.", flags=("--jit-compile/--no-jit-compile",),
           recipe=True),
    Option("cache_features", "bool | None", "Train frozen phases on backbone features computed once.",
           flags=("--cache-features/--no-cache-features",), recipe=True),
    Option("strategy", "str | None", "tf.distribute strategy; multi-worker reads TF_CONFIG. [default: auto]",
           click={"choice": _CHOICES["strategy"]}, recipe=True),
    Option("out", "str | None", "Run directory. [default: runs/<date>-<backbone>]", flags=("--out", "-o"),
           click={"path": True}),
    Option("overwrite", "bool", "Replace an existing run directory (only one tltool made).", default=False,
           click={"is_flag": True}),
    Option("resume", "str | None", "Continue this interrupted run directory from its last completed epoch.",
           click={"path": True}),
    Option("progress", "bool", "Progress bars while scanning.", default=True, cli=False),
))

LR_FIND = Command("lr-find", (
    *TRAINING,
    Option("phase", "str | None", "Sweep at the start of this phase (the ones before it train first). "
           "[default: the first]"),
    Option("out", "str | None", "Folder for lr_find.png/.csv. [default: runs/<date>-<backbone>-lr-find]",
           flags=("--out", "-o"), click={"path": True}),
    Option("overwrite", "bool", "Replace an existing folder that tltool made.", default=False,
           click={"is_flag": True}),
    Option("progress", "bool", "Progress bars while scanning.", default=True, cli=False),
))

EVALUATE = Command("evaluate", (
    Option("out", "str | None", "Evaluation folder. [default: RUN/evaluations/<date>-<data>]", flags=("--out", "-o"),
           click={"path": True}),
    Option("split", "str | None", "Only this split of DATA (its folder, or the run's recorded split).",
           click={"choice": ("train", "val", "test")}),
    Option("split_from", "str | None", "Run directory whose split --split refers to.", click={"path": True}),
    Option("top_k", "int", "k for top-k accuracy and recall.", default=5, click={"type": int}, minimum=1),
    Option("batch_size", "int", "Images per batch.", default=32, click={"type": int}, minimum=1),
    Option("progress", "bool", "A progress bar while predicting.", default=True, cli=False),
    Option("tta", "int", "Also report the figures averaged over N test-time views (mirrors only if the run used "
           "flips).", default=1, click={"type": int}, minimum=1),
    Option("explain", "bool", "Show each image of the gallery of mistakes beside its Grad-CAM heatmap.", default=True,
           flags=("--explain/--no-explain",)),
))

PREDICT = Command("predict", (
    Option("top_k", "int", "Classes to show per image.", default=3, flags=("--top-k", "-k"), click={"type": int},
           minimum=1),
    Option("batch_size", "int", "Images per batch.", default=32, click={"type": int}, minimum=1),
    Option("progress", "bool", "A progress bar while predicting.", default=True, cli=False),
    Option("tta", "int", "Average the probabilities over N test-time views of each image.", default=1,
           click={"type": int}, minimum=1),
))

EXPLAIN = Command("explain", (
    Option("class_name", "str | None", "Explain this class. [default: the predicted one; multi-label: each "
           "decided one]", flags=("--class",)),
    Option("out", "str | None", "Folder for explanations.csv and the overlays. [default: RUN/explanations]",
           flags=("--out", "-o"), click={"path": True}),
    Option("overwrite", "bool", "Replace an existing folder that tltool explain wrote.", default=False,
           click={"is_flag": True}),
    Option("batch_size", "int", "Images per batch.", default=16, click={"type": int}, minimum=1),
    Option("progress", "bool", "A progress bar.", default=True, cli=False),
))

AUDIT = Command("audit", (
    Option("backbone", "str | None", "Embed with this backbone's pooled features (as for fit). "
           "[default: efficientnetb0]", flags=("--backbone", "-b")),
    Option("weights", "str | None", "imagenet, none, or a weights file for the backbone. [default: imagenet]"),
    Option("image_size", "int | None", "Input side in pixels. [default: the backbone's]", click={"type": int}),
    Option("seed", "int | None", "Seed for the split, as for fit. [default: the default recipe's]",
           click={"type": int}),
    Option("val_split", "float | None", "As for fit (unsplit data is audited in the splits fit would make). "
           "[default: the default recipe's]",
           click={"type": float}),
    Option("test_split", "float | None", "As for fit. [default: the default recipe's]", click={"type": float}),
    Option("aspect", "str | None", "Aspect-ratio policy, as for fit. [default: the default recipe's]",
           click={"choice": _CHOICES["aspect"]}),
    Option("split_from", "str | None", "Audit in the train/val/test split of an earlier run directory.",
           click={"path": True}),
    Option("model", "str | None", "Embed with this run's fine-tuned model instead of a pretrained backbone.",
           click={"path": True}),
    Option("out", "str | None", "Folder for the findings. [default: audits/<date>-<data>]", flags=("--out", "-o"),
           click={"path": True}),
    Option("overwrite", "bool", "Replace an existing folder that tltool audit wrote.", default=False,
           click={"is_flag": True}),
    Option("write_clean", "str | None", "Also write a dataset CSV without the flagged files (never overwritten).",
           click={"path": True}),
    Option("relabel", "bool", "In --write-clean's file, give doubtful images their suggested label instead of "
           "leaving them out.", default=False, click={"is_flag": True}),
    Option("near_similarity", "float", "Near duplicates: embedding cosine similarity at least this.", default=0.95,
           click={"type": float}),
    Option("near_bits", "int", "Near duplicates: perceptual hashes at most this many of 64 bits apart.", default=6,
           click={"type": int}),
    Option("outlier_z", "float", "Outliers: kNN distance this many robust standard deviations above the median.",
           default=6.0, click={"type": float}),
    Option("batch_size", "int", "Images per batch while embedding.", default=32, click={"type": int}, minimum=1),
    Option("progress", "bool", "A progress bar while embedding.", default=True, cli=False),
))

EXPORT = Command("export", (
    Option("out", "str | None", "Where. [default: RUN/export/<file>]", flags=("--out", "-o"), click={"path": True}),
    Option("calibration_images", "int", "litert-int8: training images that calibrate the quantization.", default=200,
           click={"type": int}, minimum=1),
    Option("int8_io", "str", "litert-int8: the file's input and output type.", default="float",
           click={"choice": ("float", "uint8")}),
    Option("max_accuracy_drop", "float", "Points of accuracy the file may lose against the Keras model (and 2 "
           "images) before failing.", default=1.0, click={"type": float}),
    Option("verify", "bool", "Run the file on the run's validation (or test) images and compare it with the Keras "
           "model.", default=True, flags=("--verify/--no-verify",)),
    Option("float_layers", "str", "litert-int8: auto keeps the few layers int8 hurts most in float; none gives a "
           "full-integer file for integer-only accelerators.", default="auto", flags=("--int8-float-layers",),
           click={"choice": ("auto", "none")}),
))

PLAN = Command("plan", (
    Option("backbone", "str | None", "Registry name. [default: the recipe's, else efficientnetb0]",
           flags=("--backbone", "-b")),
    Option("recipe", "str | None", "Shipped recipe name or YAML path. [default: fine-tune]", flags=("--recipe", "-r")),
    Option("classes", "int", "Number of classes (sizes the head).", default=10, click={"type": int}),
    Option("image_size", "int | None", "Input side the backbone is built at. [default: its smallest, or 32]",
           click={"type": int}),
))

VALIDATE = Command("recipes validate", (
    Option("backbone", "str | None", "Also check group and layer names against this backbone.",
           flags=("--backbone", "-b")),
))
