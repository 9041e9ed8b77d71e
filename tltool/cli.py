"""The `tltool` command line: a thin shell over the Python API.

TensorFlow is imported inside the commands that need it, never at module top,
so `tltool --help`, `tltool backbones` and `tltool recipes` answer at once.
User errors (TltoolError) print one line and exit with their code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from tltool import __version__
from tltool.errors import EXIT_INPUT, TltoolError


class _Group(click.Group):
    """Turns TltoolError into `error: ...` and the error's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TltoolError as e:
            for line in str(e).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(e.exit_code)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli(prog_name="tltool")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tltool")
def cli():
    """Transfer learning for image classification: a folder of images in,
    a per-class report and a serving model out.

    \b
    Quick start:
      tltool fit data/ --backbone resnet50
      tltool backbones            # what you can fine-tune
      tltool recipes              # how you can fine-tune it
      tltool plan --backbone resnet50 --recipe fine-tune-top
    """


# ---------------------------------------------------------------- fit


@cli.command()
@click.argument("data", type=click.Path())
@click.option("--backbone", "-b", help="Registry name, e.g. resnet50 (see `tltool backbones`). [default: efficientnetb0]")
@click.option("--recipe", "-r", help="Shipped recipe name or YAML path. [default: fine-tune-top]")
@click.option("--weights", help="imagenet, none, or a .weights.h5/.h5 file for the backbone. [default: imagenet]")
@click.option("--epochs", help="N for every phase, xF to scale every phase, or name=N,name=N.")
@click.option("--batch-size", type=int, help="Images per batch.")
@click.option("--image-size", type=int, help="Input side in pixels. [default: the backbone's]")
@click.option("--learning-rate", "--lr", "learning_rate",
              help="First phase's rate (later phases keep their ratio), or xF to scale all.")
@click.option("--seed", type=int, help="Seed for the split, shuffling, initialisation and augmentation.")
@click.option("--val-split", type=float, help="Fraction of each class for validation (unsplit data).")
@click.option("--test-split", type=float, help="Fraction of each class for test (unsplit data).")
@click.option("--split-from", type=click.Path(), help="Reuse the train/val/test split of an earlier run directory.")
@click.option("--aspect", type=click.Choice(["stretch", "crop", "pad"]), help="Aspect-ratio policy when resizing.")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]),
              help="Keras dtype policy; mixed_* for GPUs.")
@click.option("--jit-compile/--no-jit-compile", default=None, help="XLA-compile the training step.")
@click.option("--cache-features/--no-cache-features", default=None,
              help="Train frozen phases on backbone features computed once.")
@click.option("--out", "-o", type=click.Path(), help="Run directory. [default: runs/<date>-<backbone>]")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
def fit(data, recipe, out, overwrite, split_from, **overrides):
    """Train a classifier on DATA, a folder with one sub-folder of images per class.

    Precedence: the recipe's defaults < the recipe file < these flags. The
    resolved recipe is written to the run directory as recipe.yaml; pass it
    back with --recipe to repeat the run.
    """
    from tltool.train import fit as run_fit

    run_fit(data, recipe=recipe, out=out, overwrite=overwrite, split_from=split_from, **overrides)


# ---------------------------------------------------------------- backbones


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backbones(as_json):
    """List the backbones you can fine-tune, with their freeze groups."""
    from tltool.backbones import REGISTRY
    from tltool.console import table

    if as_json:
        click.echo(json.dumps([
            {"name": s.name, "family": s.family, "keras": s.constructor, "default_size": s.default_size,
             "min_size": s.min_size, "parameters": s.params, "groups": s.group_names}
            for s in REGISTRY.values()
        ], indent=2))
        return
    rows = [[s.name, s.family, s.default_size, f"{s.params / 1e6:.1f}M", _short_groups(s.group_names)]
            for s in REGISTRY.values()]
    click.echo(table(rows, ["name", "family", "size", "params", "groups (input -> output)"], "llrrl"))


def _short_groups(names: list[str]) -> str:
    if len(names) <= 9:
        return " ".join(names)
    return f"{' '.join(names[:3])} ... {' '.join(names[-3:])} ({len(names)})"


# ---------------------------------------------------------------- datasets


@cli.group()
def datasets():
    """Example datasets and dataset tools."""


@datasets.command("example")
@click.argument("name", type=click.Choice(["digits"]))
@click.argument("dest", type=click.Path())
@click.option("--size", type=int, default=32, show_default=True, help="Side of the written images.")
def datasets_example(name, dest, size):
    """Write the example dataset NAME into DEST as class folders (offline).

    digits: scikit-learn's 1,797 handwritten digits, 10 classes.
    """
    from tltool.data.examples import build_example

    counts = build_example(name, dest, size)
    if counts is None:
        click.echo(f"{dest} already holds the {name} example")
    else:
        click.echo(f"wrote {sum(counts.values())} images in {len(counts)} class folders to {dest}")
