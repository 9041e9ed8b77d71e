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
        from tltool.errors import EXIT_INTERRUPTED, Interrupted

        try:
            return super().invoke(ctx)
        except Interrupted as e:
            click.echo(str(e), err=True)
            ctx.exit(e.exit_code)
        except TltoolError as e:
            for line in str(e).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def main() -> None:
    cli(prog_name="tltool")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tltool")
@click.option("--verbose", "-v", is_flag=True, help="Show TensorFlow's own log lines (or set TLTOOL_DEBUG=1).")
def cli(verbose):
    """Transfer learning for image classification: a folder of images in,
    a per-class report and a serving model out.

    \b
    Quick start:
      tltool fit data/ --backbone resnet50
      tltool backbones            # what you can fine-tune
      tltool recipes              # how you can fine-tune it
      tltool plan --backbone resnet50 --recipe fine-tune-top
    """
    if verbose:
        os.environ["TLTOOL_DEBUG"] = "1"


# ---------------------------------------------------------------- fit and lr-find


def _training_options(command):
    """The options `fit` and `lr-find` share: what to train on, with which backbone and recipe."""
    for option in reversed([
        click.option("--backbone", "-b",
                     help="Registry name, e.g. resnet50 (see `tltool backbones`). [default: efficientnetb0]"),
        click.option("--recipe", "-r", help="Shipped recipe name or YAML path. [default: fine-tune]"),
        click.option("--weights", help="imagenet, none, or a .weights.h5/.h5 file for the backbone. [default: imagenet]"),
        click.option("--batch-size", type=int, help="Images per batch."),
        click.option("--image-size", type=int, help="Input side in pixels. [default: the backbone's]"),
        click.option("--seed", type=int, help="Seed for the split, shuffling, initialisation and augmentation."),
        click.option("--val-split", type=float, help="Fraction of each class for validation (unsplit data)."),
        click.option("--split-from", type=click.Path(),
                     help="Reuse the train/val/test split of an earlier run directory."),
    ]):
        command = option(command)
    return command


@cli.command()
@click.argument("data", type=click.Path(), required=False)
@_training_options
@click.option("--epochs", help="N for every phase, xF to scale every phase, or name=N,name=N.")
@click.option("--learning-rate", "--lr", "learning_rate",
              help="First phase's rate (later phases keep their ratio), or xF to scale all.")
@click.option("--test-split", type=float, help="Fraction of each class for test (unsplit data).")
@click.option("--aspect", type=click.Choice(["stretch", "crop", "pad"]), help="Aspect-ratio policy when resizing.")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]),
              help="Keras dtype policy; mixed_* for GPUs.")
@click.option("--jit-compile/--no-jit-compile", default=None, help="XLA-compile the training step.")
@click.option("--cache-features/--no-cache-features", default=None,
              help="Train frozen phases on backbone features computed once.")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multi-worker"]),
              help="tf.distribute strategy; multi-worker reads TF_CONFIG. [default: auto]")
@click.option("--out", "-o", type=click.Path(), help="Run directory. [default: runs/<date>-<backbone>]")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--resume", type=click.Path(), help="Continue this interrupted run directory from its last completed epoch.")
def fit(data, recipe, out, overwrite, split_from, resume, **overrides):
    """Train a classifier on DATA, a folder with one sub-folder of images per class.

    Precedence: the recipe's defaults < the recipe file < these flags. The
    resolved recipe is written to the run directory as recipe.yaml; pass it
    back with --recipe to repeat the run. `tltool fit --resume RUN` continues
    an interrupted run (DATA may be left out; no other flags).
    """
    from tltool.workflows.fitting import fit as run_fit

    if data is None and resume is None:
        raise TltoolError("give DATA, a folder with one sub-folder of images per class (or --resume RUN)")
    run_fit(data, recipe=recipe, out=out, overwrite=overwrite, split_from=split_from, resume=resume, **overrides)


@cli.command("lr-find")
@click.argument("data", type=click.Path())
@_training_options
@click.option("--phase", help="Sweep at the start of this phase (the ones before it train first). [default: the first]")
@click.option("--out", "-o", type=click.Path(),
              help="Folder for lr_find.png/.csv. [default: runs/<date>-<backbone>-lr-find]")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder that tltool made.")
def lr_find(data, recipe, phase, out, overwrite, split_from, **overrides):
    """Learning-rate range test: train with an exponentially rising rate and suggest one.

    Writes lr_find.png (loss against rate, the suggestion marked) and
    lr_find.csv, and prints the suggested rate with the rule behind it. Put
    it in the recipe's phase, or write `learning_rate: auto` there to have
    `tltool fit` run the sweep itself before that phase.
    """
    from tltool.workflows.fitting import lr_find as run_lr_find

    sweep, folder = run_lr_find(data, phase=phase, recipe=recipe, out=out, overwrite=overwrite,
                                split_from=split_from, **overrides)
    click.echo(f"suggested learning rate: {sweep.suggestion:.3g} ({sweep.rule}); steepest descent at "
               f"{sweep.steepest:.3g}; swept {sweep.rates[0]:.0e} .. {sweep.rates[-1]:.2g} in {len(sweep.rates)} steps")
    click.echo(f"plot: {os.path.join(folder, 'lr_find.png')}")


# ---------------------------------------------------------------- evaluate and predict


def _require_paths(*paths: str) -> None:
    """Cheap checks before TensorFlow loads: every named path exists."""
    for path in paths:
        if not os.path.exists(path):
            raise TltoolError(f"{path}: no such file or folder")


def _load_tensorflow() -> None:
    from tltool.console import load_tensorflow

    load_tensorflow()


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--out", "-o", type=click.Path(), help="Evaluation folder. [default: RUN/evaluations/<date>-<data>]")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Only this split of DATA (its folder, or the run's recorded split).")
@click.option("--split-from", type=click.Path(), help="Run directory whose split --split refers to.")
@click.option("--top-k", type=int, default=5, show_default=True, help="k for top-k accuracy and recall.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Print every class, not only the 20 worst.")
@click.option("--tta", type=int, default=1, show_default=True,
              help="Also report the figures averaged over N test-time views (mirrors only if the run used flips).")
def evaluate(model, data, out, split, split_from, top_k, batch_size, show_all, tta):
    """Evaluate MODEL (a run directory, SavedModel or .keras file) on DATA.

    Writes per-class figures, predictions, the most confused pairs, pictures
    and report.md / report.html into a new evaluation folder.
    """
    _require_tta(tta)
    _require_paths(model, data)
    _load_tensorflow()
    from tltool.workflows.evaluating import evaluate as run_evaluate
    from tltool.workflows.evaluating import print_evaluation

    folder, evaluation = run_evaluate(model, data, out, split, split_from, top_k, batch_size, tta=tta)
    print_evaluation(folder, evaluation, show_all)


def _require_tta(tta: int) -> None:
    if tta < 1:
        raise TltoolError(f"--tta {tta}: give 1 (no test-time augmentation) or more views")


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", type=int, default=3, show_default=True, help="Classes to show per image.")
@click.option("--output", "-o", type=click.Path(), help="Also write the predictions to a .csv or .json file.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--tta", type=int, default=1, show_default=True,
              help="Average the probabilities over N test-time views of each image.")
def predict(model, inputs, top_k, output, batch_size, tta):
    """Top-k classes for image files and folders (searched recursively).

    MODEL is a run directory, a SavedModel or a .keras file. Unreadable files
    are skipped and listed with their reason.
    """
    from tltool.console import warn
    from tltool.workflows.predicting import format_rows, predict as run_predict, write_output

    if output and not output.lower().endswith((".csv", ".json")):
        raise TltoolError(f"--output {output}: give a .csv or .json file name")
    if top_k < 1:
        raise TltoolError(f"--top-k {top_k}: give 1 or more")
    _require_tta(tta)
    _require_paths(model, *inputs)
    _load_tensorflow()
    rows, skipped, _ = run_predict(model, list(inputs), top_k, batch_size, tta=tta)
    for line in format_rows(rows):
        click.echo(line)
    for path, reason in skipped:
        warn(f"skipped {path}: {reason}")
    if output:
        write_output(output, rows, skipped, model)
        click.echo(f"wrote {len(rows)} predictions to {output}", err=True)


@cli.command("export")
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "keras", "onnx", "litert", "litert-fp16",
                                                     "litert-int8", "tflite"]),
              default="litert", show_default=True, help="What to write (tflite is litert).")
@click.option("--out", "-o", type=click.Path(), help="Where. [default: RUN/export/<file>]")
@click.option("--calibration-images", type=int, default=200, show_default=True,
              help="litert-int8: training images that calibrate the quantization.")
@click.option("--int8-io", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="litert-int8: the file's input and output type.")
@click.option("--int8-float-layers", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="litert-int8: auto keeps the few layers int8 hurts most in float; none gives a full-integer "
                   "file for integer-only accelerators.")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="Points of accuracy the file may lose against the Keras model (and 2 images) before failing.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Run the file on the run's validation (or test) images and compare it with the Keras model.")
def export_command(model, fmt, out, calibration_images, int8_io, int8_float_layers, max_accuracy_drop, verify):
    """Export MODEL (a run directory or .keras file) as SavedModel, .keras, ONNX or LiteRT.

    Each file is checked as it is written: run in its own runtime on the
    run's validation (or test) images, compared with the Keras model, and
    the figures written to export_report.json beside it. Exit code 4 when it
    loses more accuracy than --max-accuracy-drop allows (the file is kept).
    ONNX and LiteRT files take float32 (N, S, S, 3) pixels 0-255, already
    fitted to the run's image size; see the README's Serving section.
    """
    if calibration_images < 1:
        raise TltoolError(f"--calibration-images {calibration_images}: give 1 or more")
    _require_paths(model)
    _load_tensorflow()
    from tltool.serving.writers import export

    export(model, fmt, out, calibration_images, int8_io, max_accuracy_drop, verify, int8_float_layers)


# ---------------------------------------------------------------- backbones


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backbones(as_json):
    """List the backbones you can fine-tune, with their freeze groups."""
    from tltool.models.applications import REGISTRY
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


# ---------------------------------------------------------------- inspect


@cli.command()
@click.argument("data", type=click.Path())
@click.option("--val-split", type=float, default=0.2, show_default=True, help="As for fit.")
@click.option("--test-split", type=float, default=0.0, show_default=True, help="As for fit.")
@click.option("--seed", type=int, default=1337, show_default=True, help="As for fit.")
@click.option("--split-from", type=click.Path(), help="Show the split of an earlier run directory.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="List every class, duplicate and skipped file.")
def inspect(data, val_split, test_split, seed, split_from, as_json, show_all):
    """Check a dataset without training: classes, split, sizes, duplicates, bad files.

    Exits 0 when `tltool fit` could train on it, 2 with the reasons when not.
    """
    from tltool.data.dataset import load_dataset
    from tltool.data.summary import format_summary, summarise

    dataset = load_dataset(data, val_split, test_split, seed, split_from, progress=not as_json)
    summary = summarise(dataset)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary, show_all))
    if not summary["usable"]:
        sys.exit(EXIT_INPUT)


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


@datasets.command("export")
@click.argument("name")
@click.argument("dest", type=click.Path())
@click.option("--data-dir", type=click.Path(), help="tensorflow-datasets data folder (default ~/tensorflow_datasets).")
@click.option("--limit", type=int, help="At most this many images per split.")
def datasets_export(name, dest, data_dir, limit):
    """Write a tensorflow-datasets dataset NAME into DEST as class folders.

    NAME is any image classification dataset of tensorflow-datasets, e.g.
    tf_flowers, oxford_iiit_pet, stanford_dogs. Needs the network unless
    --data-dir already holds the prepared dataset.
    """
    from tltool.data.tfds_export import export_dataset

    counts = export_dataset(name, dest, data_dir, limit)
    for folder, n in counts.items():
        click.echo(f"wrote {n} images to {os.path.join(dest, folder) if folder != '.' else dest}")


# ---------------------------------------------------------------- recipes


@cli.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx):
    """List the shipped recipes; show, validate or describe recipe files."""
    if ctx.invoked_subcommand is None:
        from tltool.console import table
        from tltool.recipe import load_recipe, shipped_recipes

        rows = [[name, load_recipe(path).description] for name, path in shipped_recipes().items()]
        click.echo(table(rows, ["recipe", "description"], "ll"))
        click.echo("\n`tltool recipes show NAME` prints one; `tltool fit DATA --recipe NAME` uses it.")


@recipes.command("show")
@click.argument("name")
def recipes_show(name):
    """Print a shipped recipe (or any recipe file), comments included."""
    from tltool.recipe import resolve_recipe_path

    with open(resolve_recipe_path(name), encoding="utf-8") as f:
        click.echo(f.read(), nl=False)


@recipes.command("validate")
@click.argument("file")
@click.option("--backbone", "-b", help="Also check group and layer names against this backbone.")
def recipes_validate(file, backbone):
    """Check a recipe file without training; exit 2 with one line per problem."""
    from tltool.models.applications import get_backbone
    from tltool.errors import RecipeError
    from tltool.models.freeze import layer_problems, needs_layer_names, static_problems
    from tltool.recipe import load_recipe, resolve_recipe_path

    recipe = load_recipe(file)
    path = resolve_recipe_path(file)
    name = backbone or recipe.backbone
    if name:
        spec = get_backbone(name)
        problems = static_problems(spec, recipe)
        if needs_layer_names(recipe):
            from tltool.models.weights import load_backbone

            _load_tensorflow()
            problems += layer_problems(spec, load_backbone(spec, max(spec.min_size, 32), "none"), recipe)
        if problems:
            raise RecipeError(path, problems)
    phases = ", ".join(f"{p.name} ({p.epochs} ep)" for p in recipe.phases)
    checked = f" against {get_backbone(name).name}" if name else " (add --backbone to check group names)"
    click.echo(f"ok: {path}: {len(recipe.phases)} phase(s): {phases}{checked}")


@recipes.command("schema")
def recipes_schema():
    """Print the JSON Schema of the recipe format (for editor completion)."""
    from tltool.recipe import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _build_plans(spec, recipe):
    """Build the backbone (no weights) and resolve every phase's freeze plan."""
    from tltool.models.freeze import resolve_plan
    from tltool.models.weights import load_backbone

    size = max(spec.min_size, 32)
    backbone = load_backbone(spec, size, "none")
    plans = [resolve_plan(spec, backbone, p.trainable, p.batchnorm, p.batchnorm_momentum) for p in recipe.phases]
    return backbone, plans


# ---------------------------------------------------------------- plan


@cli.command()
@click.option("--backbone", "-b", help="Registry name. [default: the recipe's, else efficientnetb0]")
@click.option("--recipe", "-r", help="Shipped recipe name or YAML path. [default: fine-tune]")
@click.option("--classes", "num_classes", type=int, default=10, show_default=True,
              help="Number of classes (sizes the head).")
@click.option("--layers", is_flag=True, help="Also list every backbone layer with its group and parameters.")
def plan(backbone, recipe, num_classes, layers):
    """Show, per phase, which groups train and how many parameters that is."""
    from tltool.models.applications import get_backbone
    from tltool.console import table
    from tltool.models.freeze import apply_plan, count_params
    from tltool.recipe import load_recipe
    from tltool.training.session import describe_groups
    from tltool.workflows.fitting import DEFAULT_BACKBONE

    loaded = load_recipe(recipe) if recipe else load_recipe()
    spec = get_backbone(backbone or loaded.backbone or DEFAULT_BACKBONE)
    _load_tensorflow()
    model, plans = _build_plans(spec, loaded)
    width = model.output.shape[-1]
    head = width * num_classes + num_classes
    click.echo(f"{spec.name}: {spec.params:,} backbone parameters in {len(spec.groups)} groups; "
               f"recipe {loaded.name}")
    hidden = loaded.head.hidden_units
    if hidden:
        sizes = [width, *hidden, num_classes]
        head = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        click.echo(f"head: dense layers {' -> '.join(map(str, sizes))} = {head:,} parameters (always trains)")
    else:
        click.echo(f"head: {width} features x {num_classes} classes + {num_classes} biases = {head:,} "
                   f"parameters (always trains)")
    rows = []
    for phase, p in zip(loaded.phases, plans):
        apply_plan(model, p)
        trainable = count_params(model.trainable_weights) + head
        frozen = count_params(model.non_trainable_weights)
        rows.append([phase.name, phase.epochs, describe_groups(p.groups), p.batchnorm,
                     f"{trainable:,}", f"{frozen:,}", f"{100 * trainable / (trainable + frozen):.1f}%"])
    click.echo(table(rows, ["phase", "epochs", "backbone groups training", "batchnorm", "trainable", "frozen",
                            "share"], "lrllrrr"))
    click.echo("")
    for phase, p in zip(loaded.phases, plans):
        click.echo(f"{phase.name}: {_describe_rates(phase.optimizer, [g for g, n, _ in p.groups if n])}")
    if layers:
        _print_layers(spec, model)


def _describe_rates(optimizer, training: list[str]) -> str:
    """'adam, learning rate 0.001' or 'adamw, learning rates stem 1e-05, ..., head 0.001'."""
    from tltool.training.optim import group_rates
    from tltool.recipe.schema import RateRange

    rate = optimizer.learning_rate
    if rate == "auto":
        return f"{optimizer.name}, learning rate auto (the learning-rate finder picks it before the phase)"
    if not isinstance(rate, RateRange):
        return f"{optimizer.name}, learning rate {rate:.3g} for every group"
    rates = group_rates(rate, training)
    return f"{optimizer.name}, learning rates " + ", ".join(f"{g} {r:.3g}" for g, r in rates.items())


def _print_layers(spec, model):
    from tltool.models.applications import resolve_groups
    from tltool.console import table
    from tltool.models.freeze import count_params

    rows = []
    for group, start, end in resolve_groups(spec, [layer.name for layer in model.layers]):
        for i in range(start, end):
            layer = model.layers[i]
            rows.append([i, group, layer.name, type(layer).__name__, f"{count_params(layer.weights):,}"])
    click.echo("\n" + table(rows, ["#", "group", "layer", "type", "parameters"], "rlllr"))

