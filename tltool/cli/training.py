"""`tltool fit` and `tltool lr-find`."""

from __future__ import annotations

import os

import click

from tltool import options
from tltool.cli.group import cli
from tltool.errors import TltoolError


@cli.command()
@click.argument("data", type=click.Path(), required=False)
@options.FIT.click_options
def fit(data, **values):
    """Train a classifier on DATA, a folder with one sub-folder of images per class.

    Precedence: the recipe's defaults < the recipe file < these flags. The
    resolved recipe is written to the run directory as recipe.yaml; pass it
    back with --recipe to repeat the run. `tltool fit --resume RUN` continues
    an interrupted run (DATA may be left out; no other flags).
    """
    from tltool.cli.render import print_evaluation
    from tltool.console import say
    from tltool.workflows.fitting import fit as run_fit

    if data is None and values["resume"] is None:
        raise TltoolError("give DATA, a folder with one sub-folder of images per class (or --resume RUN)")
    run, finished = run_fit(data, **values)
    if finished and finished.evaluation is not None:
        say(f"\n{finished.split} split:")
        print_evaluation(run.path, finished.evaluation)


@cli.command("lr-find")
@click.argument("data", type=click.Path())
@options.LR_FIND.click_options
def lr_find(data, **values):
    """Learning-rate range test: train with an exponentially rising rate and suggest one.

    Writes lr_find.png (loss against rate, the suggestion marked) and
    lr_find.csv, and prints the suggested rate with the rule behind it. Put
    it in the recipe's phase, or write `learning_rate: auto` there to have
    `tltool fit` run the sweep itself before that phase.
    """
    from tltool.workflows.fitting import lr_find as run_lr_find

    sweep, folder = run_lr_find(data, **values)
    click.echo(f"suggested learning rate: {sweep.suggestion:.3g} ({sweep.rule}); steepest descent at "
               f"{sweep.steepest:.3g}; swept {sweep.rates[0]:.0e} .. {sweep.rates[-1]:.2g} in {len(sweep.rates)} steps")
    click.echo(f"plot: {os.path.join(folder, 'lr_find.png')}")
