"""The run directory: one folder per `fit`, never overwritten silently.

    runs/<name>/
      .tltool-run  recipe.yaml  classes.json  class_weights.json  history.csv
      data/index.csv  data/skipped.csv
      checkpoints/  model.keras  saved_model/
      metrics.json  per_class.csv  confusion_matrix.csv  ...  report.md

`.tltool-run` marks a folder that tltool made. Only such a folder may be
replaced (`--overwrite`), and replacing it deletes only the files and folders
tltool writes there (`OUTPUTS`); anything else a user put in it stays.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil

from tltool.errors import TltoolError

MARKER = ".tltool-run"
RECIPE = "recipe.yaml"
# Everything `fit` (and later `evaluate`/`export`) writes in a run directory.
OUTPUTS = (
    MARKER, RECIPE, "classes.json", "class_weights.json", "history.csv", "data/index.csv", "data/skipped.csv",
    "checkpoints", "cache", "model.keras", "saved_model", "export", "lr_find*.csv", "lr_find*.png",
    "metrics.json", "per_class.csv", "confusion_matrix.csv", "predictions.csv", "misclassified.csv",
    "most_confused.csv", "confusion_matrix.png", "curves.png", "per_class_f1.png", "misclassified.png",
    "report.md", "report.html", "evaluations",
)


def dated_folder(base: str, name: str) -> str:
    """base/<date>-<name>, with -2, -3, ... when that exists."""
    stem = os.path.join(base, f"{datetime.date.today().isoformat()}-{name}")
    candidate, n = stem, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def default_run_dir(backbone: str, base: str = "runs") -> str:
    """runs/<date>-<backbone>, with -2, -3, ... when that exists."""
    return dated_folder(base, backbone)


def read_recipe(run_dir: str | None) -> dict:
    """A run's resolved recipe.yaml as plain data; {} without one."""
    path = os.path.join(run_dir, RECIPE) if run_dir else None
    if not path or not os.path.isfile(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def is_run_dir(path: str) -> bool:
    """A folder tltool made for a run (it holds the marker file)."""
    return os.path.isfile(os.path.join(path, MARKER))


def check_run_dir(path: str, overwrite: bool) -> None:
    """Refuse a non-empty folder unless --overwrite, and never touch a folder tltool did not make.

    Raises:
        TltoolError: the folder holds something and may not be replaced.
    """
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise TltoolError(f"--out {path}: exists and is not a folder; choose another --out")
    if not os.listdir(path):
        return
    if not overwrite:
        raise TltoolError(f"--out {path}: exists and is not empty; choose another --out or pass --overwrite")
    if not is_run_dir(path):
        raise TltoolError(
            f"--out {path}: not a tltool run directory (no {MARKER} file); refusing to overwrite it, "
            "choose another --out"
        )


def create_run_dir(path: str, overwrite: bool) -> str:
    """Make the run folder (after `check_run_dir`); replacing a run deletes only tltool's own outputs."""
    from tltool import __version__
    from tltool.files import write_json

    check_run_dir(path, overwrite)
    if os.path.isdir(path) and os.listdir(path):
        remove_outputs(path)
    os.makedirs(os.path.join(path, "data"), exist_ok=True)
    os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    write_json(os.path.join(path, MARKER), {"tltool": __version__, "created": datetime.datetime.now().isoformat(
        timespec="seconds")})
    return os.path.abspath(path)


def remove_outputs(path: str) -> None:
    """Delete what tltool wrote in a run folder, and nothing else."""
    import glob

    for name in OUTPUTS:
        for target in glob.glob(os.path.join(glob.escape(path), name)) if "*" in name else [os.path.join(path, name)]:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
    data = os.path.join(path, "data")
    if os.path.isdir(data) and not os.listdir(data):
        os.rmdir(data)


def write_recipe(run_dir: str, recipe, provenance: dict) -> None:
    """The run's resolved recipe.yaml, with where and how the run was made; `--recipe` repeats the run."""
    from tltool.files import write_atomic
    from tltool.recipe import dump_recipe

    resolved = recipe.model_copy(update={"provenance": provenance})
    header = ("# The resolved recipe of this run. Repeat the run with:\n"
              f"#   tltool fit {provenance['dataset']} --recipe {os.path.join(run_dir, RECIPE)}\n")
    write_atomic(os.path.join(run_dir, RECIPE), header + dump_recipe(resolved))


def read_classes(run_dir: str) -> list[str]:
    path = os.path.join(run_dir, "classes.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TltoolError(f"{run_dir}: no classes.json; give a run directory made by tltool fit") from None
    return [data[str(i)] for i in range(len(data))] if isinstance(data, dict) else list(data)


def classes_json(classes: list[str]) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(classes)}
