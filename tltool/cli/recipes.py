"""`tltool recipes`, `tltool plan` and `tltool backbones`: what can be trained, and how, before training."""

from __future__ import annotations

import json

import click

from tltool import options
from tltool.cli.group import cli, load_tensorflow


@cli.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx):
    """List the shipped recipes; show, validate or describe recipe files."""
    if ctx.invoked_subcommand is None:
        from tltool.console import table
        from tltool.recipe import DEFAULT_RECIPE, load_recipe, shipped_recipes

        rows = [[f"{name} (default)" if name == DEFAULT_RECIPE else name, load_recipe(path).description]
                for name, path in shipped_recipes().items()]
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
@options.VALIDATE.click_options
def recipes_validate(file, **values):
    """Check a recipe file without training; exit 2 with one line per problem."""
    from tltool.workflows.planning import validate_recipe

    checked = validate_recipe(file, **values)
    phases = ", ".join(f"{name} ({epochs} ep)" for name, epochs in checked.phases)
    against = f" against {checked.backbone}" if checked.backbone else " (add --backbone to check group names)"
    click.echo(f"ok: {checked.path}: {len(checked.phases)} phase(s): {phases}{against}")


@recipes.command("schema")
def recipes_schema():
    """Print the JSON Schema of the recipe format (for editor completion)."""
    from tltool.recipe import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.command()
@options.PLAN.click_options
@click.option("--layers", is_flag=True, help="Also list every backbone layer with its group and parameters.")
def plan(layers, **values):
    """Show, per phase, which groups train and how many parameters that is."""
    from tltool.cli.render import plan_text
    from tltool.workflows.planning import plan as make_plan

    load_tensorflow()
    click.echo(plan_text(make_plan(**values), layers))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backbones(as_json):
    """List the backbones you can fine-tune, with their freeze groups."""
    from tltool.cli.render import backbones_text
    from tltool.workflows.planning import backbones as listed

    specs = listed()
    click.echo(json.dumps([s.describe() for s in specs], indent=2) if as_json else backbones_text(specs))
