"""`tltool evaluate`, `tltool predict` and `tltool export`: using a trained model."""

from __future__ import annotations

import math

import click

from tltool import options
from tltool.cli.group import cli, load_tensorflow, require_paths


def _require_tta(tta: int) -> None:
    from tltool.data.tta import views

    views(tta, "both")  # the one check of the count, before TensorFlow loads (the run's flips cap it later)


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("data", type=click.Path())
@options.EVALUATE.click_options
@click.option("--all", "show_all", is_flag=True, help="Print every class, not only the 20 worst.")
def evaluate(model, data, show_all, **values):
    """Evaluate MODEL (a run directory, SavedModel, .keras, .onnx or .tflite file) on DATA.

    Writes per-class figures, predictions, the most confused pairs, pictures
    and report.md / report.html into a new evaluation folder.
    """
    from tltool.cli.render import print_evaluation
    from tltool.workflows.evaluating import evaluate as run_evaluate

    options.EVALUATE.check(values)
    _require_tta(values["tta"])
    require_paths(model, data)
    load_tensorflow()
    folder, evaluation = run_evaluate(model, data, **values)
    print_evaluation(folder, evaluation, show_all)


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@options.PREDICT.click_options
@click.option("--output", type=click.Path(),
              help="Also write the predictions to a .csv or .json file (rows; --out names folders elsewhere).")
def predict(model, inputs, output, **values):
    """The model's answer for image files and folders (searched recursively).

    MODEL is a run directory, a SavedModel, or a .keras, .onnx or .tflite
    file. Unreadable files are skipped and listed with their reason.
    """
    from tltool.console import warn
    from tltool.data.inputs import output_kind
    from tltool.workflows.predicting import format_rows, write_output
    from tltool.workflows.predicting import predict as run_predict

    if output:
        output_kind(output)
    options.PREDICT.check(values)
    _require_tta(values["tta"])
    require_paths(model, *inputs)
    load_tensorflow()
    rows, skipped, _ = run_predict(model, list(inputs), **values)
    for line in format_rows(rows):
        click.echo(line)
    for path, reason in skipped:
        warn(f"skipped {path}: {reason}")
    if output:
        write_output(output, rows, skipped, model)
        click.echo(f"wrote {len(rows)} predictions to {output}", err=True)


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@options.EXPLAIN.click_options
def explain(model, inputs, **values):
    """Where the model looks (Grad-CAM), for image files and folders (searched recursively).

    MODEL is a run directory, a .keras file, or a SavedModel that tltool
    wrote with its gradcam signature. Writes explanations.csv (path, class,
    probability, and the heatmap's peak as fractions of the image's width
    and height) and one overlay PNG per image and explained class.
    """
    from tltool.console import warn
    from tltool.workflows.explaining import explain as run_explain

    options.EXPLAIN.check(values)
    require_paths(model, *inputs)
    load_tensorflow()
    explained = run_explain(model, list(inputs), **values)
    for path, reason in explained.skipped:
        warn(f"skipped {path}: {reason}")
    if explained.undecided:
        warn(f"{len(explained.undecided)} image(s) with no class decided, so nothing to explain: "
             + ", ".join(explained.undecided[:3]) + (" ..." if len(explained.undecided) > 3 else ""))
    for _, row in explained.rows.iterrows():
        where = "no peak" if math.isnan(row["peak_x"]) else f"peak at x {row['peak_x']:.2f}, y {row['peak_y']:.2f}"
        click.echo(f"{row['path']}: {row['class']} {100 * row['probability']:.1f}%, {where}")
    click.echo(f"wrote {len(explained.rows)} explanations to {explained.folder}", err=True)


@cli.command("export")
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "keras", "onnx", "litert", "litert-fp16",
                                                     "litert-int8", "tflite"]),
              default="litert", show_default=True, help="What to write (tflite is litert).")
@options.EXPORT.click_options
def export_command(model, fmt, **values):
    """Export MODEL (a run directory or .keras file) as SavedModel, .keras, ONNX or LiteRT.

    Each file is checked as it is written: run in its own runtime on the
    run's validation (or test) images, compared with the Keras model, and
    the figures written to export_report.json beside it. Exit code 4 when it
    loses more accuracy than --max-accuracy-drop allows (the file is kept).
    ONNX and LiteRT files take float32 (N, S, S, 3) pixels 0-255, already
    fitted to the run's image size; see the README's Serving section.
    """
    from tltool.workflows.exporting import export

    options.EXPORT.check(values)
    require_paths(model)
    load_tensorflow()
    export(model, fmt, **values)
