"""The run directory: one folder per `fit`, never overwritten silently.

    runs/<name>/
      recipe.yaml  classes.json  class_weights.json  history.csv
      data/index.csv  data/skipped.csv
      checkpoints/  model.keras  saved_model/
      metrics.json  per_class.csv  confusion_matrix.csv  ...  report.md
"""

from __future__ import annotations

import datetime
import json
import os
import shutil

from tltool.errors import TltoolError

MARKER = "recipe.yaml"


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
    path = os.path.join(run_dir, MARKER) if run_dir else None
    if not path or not os.path.isfile(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def check_run_dir(path: str, overwrite: bool) -> None:
    """Refuse a non-empty folder unless --overwrite, and never delete a non-run.

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
    if not os.path.isfile(os.path.join(path, MARKER)):
        raise TltoolError(
            f"--out {path}: not a tltool run directory (no {MARKER}); refusing to overwrite it, choose another --out"
        )


def create_run_dir(path: str, overwrite: bool) -> str:
    """Make the run folder (after `check_run_dir`); clears an old run when overwriting."""
    check_run_dir(path, overwrite)
    if os.path.isdir(path) and os.listdir(path):
        shutil.rmtree(path)
    os.makedirs(os.path.join(path, "data"), exist_ok=True)
    os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    return os.path.abspath(path)


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
