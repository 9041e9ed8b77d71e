"""`predict`: the task's decision for image files and folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from tltool.data.images import ImageError, check_image
from tltool.data.inputs import collect_inputs
from tltool.errors import TltoolError
from tltool.files import write_atomic, write_csv
from tltool.serving.loading import load_trained
from tltool.tasks import get_task


def predict(model: str, inputs: list[str], top_k: int = 3, batch_size: int = 32,
            progress: bool = True, tta: int = 1) -> tuple[pd.DataFrame, list[tuple[str, str]], list[str]]:
    """Predict every image among `inputs`.

    With `tta` above 1, each image's probabilities are the average over that
    many test-time views (`tltool.data.tta`).

    Returns:
        (one row per image as the model's task writes it, skipped files with
        reasons, the model's classes); `rows.attrs["task"]` names the task.

    Raises:
        TltoolError: a bad model or input path, or no image could be read.
    """
    from tltool.data.tta import views

    trained = load_trained(model)
    task = get_task(trained.task).decided(trained.decision)
    names = views(tta, trained.flip)
    files, skipped = collect_inputs(inputs)
    probs, kept = trained.probabilities(files, batch_size, progress, names) if files else (np.zeros((0, 0)), [])
    for i in sorted(set(range(len(files))) - set(int(k) for k in kept)):
        skipped.append((files[i], _decode_reason(files[i])))
    if not len(kept):
        detail = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise TltoolError(f"no image could be read among the inputs ({len(skipped)} skipped{': ' if detail else ''}{detail})")
    rows = task.prediction_rows([files[i] for i in kept], probs, trained.classes, top_k)
    rows.attrs["task"] = task.name
    return rows, skipped, trained.classes


def _decode_reason(path: str) -> str:
    try:
        check_image(path)
    except ImageError as e:
        return str(e)
    return "could not be decoded"


def format_rows(rows: pd.DataFrame) -> list[str]:
    """`predict`'s terminal lines, as the rows' task prints them."""
    return get_task(rows.attrs.get("task")).format_rows(rows)


def write_output(path: str, rows: pd.DataFrame, skipped: list[tuple[str, str]], model: str) -> None:
    """CSV (one row per image) or JSON (every prediction, every class's probability, skipped files)."""
    from tltool.data.inputs import output_kind

    task = get_task(rows.attrs.get("task"))
    if output_kind(path) == "json":
        payload = {"model": os.path.abspath(model), "predictions": task.json_rows(rows),
                   "skipped": [{"path": p, "reason": r} for p, r in skipped]}
        write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        write_csv(path, task.csv_rows(rows))
