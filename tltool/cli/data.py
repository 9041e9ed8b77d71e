"""`tltool inspect` and `tltool datasets`: checking a dataset, example datasets, tensorflow-datasets exports."""

from __future__ import annotations

import json
import os
import sys

import click

from tltool import options
from tltool.cli.group import cli, require_paths
from tltool.errors import EXIT_INPUT


@cli.command()
@click.argument("data", type=click.Path())
@click.option("--val-split", type=float, help="As for fit. [default: the recipe fit takes for DATA]")
@click.option("--test-split", type=float, help="As for fit. [default: the recipe fit takes for DATA]")
@click.option("--seed", type=int, help="As for fit. [default: the recipe fit takes for DATA]")
@click.option("--split-from", type=click.Path(), help="Show the split of an earlier run directory.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="List every class, duplicate and skipped file.")
def inspect(data, val_split, test_split, seed, split_from, as_json, show_all):
    """Check a dataset without training: classes, split, sizes, duplicates, bad files.

    Exits 0 when `tltool fit` could train on it, 2 with the reasons when not.
    """
    from tltool.data.dataset import load_dataset
    from tltool.data.summary import format_summary, summarise
    from tltool.recipe import load_recipe
    from tltool.runs.run import Run
    from tltool.workflows.resolving import default_recipe_for

    recipe = load_recipe(default_recipe_for(data))  # the split fit would make without flags
    dataset = load_dataset(data, recipe.data.val_split if val_split is None else val_split,
                           recipe.data.test_split if test_split is None else test_split,
                           recipe.seed if seed is None else seed, Run(split_from) if split_from else None,
                           progress=not as_json)
    summary = summarise(dataset)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else format_summary(summary, show_all))
    if not summary["usable"]:
        sys.exit(EXIT_INPUT)


@cli.command()
@click.argument("data", type=click.Path())
@options.AUDIT.click_options
def audit(data, **values):
    """Find duplicates, leaks across splits, likely label errors and outliers in DATA.

    DATA is anything fit takes. Each image is embedded by the backbone (or
    --model RUN) as training sees it, once (cached). Writes duplicates.csv,
    label_issues.csv, outliers.csv and report.html into a new folder; never
    writes under DATA, and moves, renames or deletes no file.
    """
    from tltool.workflows.auditing import audit as run_audit
    from tltool.workflows.auditing import describe

    options.AUDIT.check(values)
    require_paths(data)
    found = run_audit(data, **values)
    for key, value in describe(found).items():
        click.echo(f"{key}: {value}")


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


