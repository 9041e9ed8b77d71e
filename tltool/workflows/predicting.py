"""`predict`: top-k classes for image files and folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from tltool.data.images import ImageError, check_image, sniff
from tltool.data.scan import is_hidden
from tltool.errors import TltoolError
from tltool.files import write_atomic, write_csv
from tltool.serving.loading import load_trained


def collect_inputs(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to predict (folders expanded recursively) and files skipped with a reason.

    Raises:
        TltoolError: an input path that does not exist.
    """
    files, skipped = [], []
    for item in inputs:
        if not os.path.exists(item):
            raise TltoolError(f"{item}: no such file or folder")
        if os.path.isdir(item):
            for root, dirs, names in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not is_hidden(d))
                files += [os.path.join(root, n) for n in sorted(names) if not is_hidden(n)]
        else:
            files.append(item)
    usable = []
    for path in files:
        reason = _first_bytes_problem(path)
        if reason:
            skipped.append((path, reason))
        else:
            usable.append(path)
    return usable, skipped


def _first_bytes_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not head:
        return "empty file"
    return None if sniff(head) else "not an image"


def predict(model: str, inputs: list[str], top_k: int = 3, batch_size: int = 32,
            progress: bool = True, tta: int = 1) -> tuple[pd.DataFrame, list[tuple[str, str]], list[str]]:
    """Predict every image among `inputs`.

    With `tta` above 1, each image's probabilities are the average over that
    many test-time views (`tltool.data.tta`).

    Returns:
        (one row per image with top-k classes and probabilities, skipped files
        with reasons, the model's classes).

    Raises:
        TltoolError: a bad model or input path, or no image could be read.
    """
    from tltool.data.tta import views

    trained = load_trained(model)
    names = views(tta, trained.flip)
    files, skipped = collect_inputs(inputs)
    probs, kept = trained.probabilities(files, batch_size, progress, names) if files else (np.zeros((0, 0)), [])
    for i in sorted(set(range(len(files))) - set(int(k) for k in kept)):
        skipped.append((files[i], _decode_reason(files[i])))
    if not len(kept):
        detail = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise TltoolError(f"no image could be read among the inputs ({len(skipped)} skipped{': ' if detail else ''}{detail})")
    return _rows([files[i] for i in kept], probs, trained.classes, top_k), skipped, trained.classes


def _decode_reason(path: str) -> str:
    try:
        check_image(path)
    except ImageError as e:
        return str(e)
    return "could not be decoded"


def _rows(paths: list[str], probs: np.ndarray, classes: list[str], k: int) -> pd.DataFrame:
    k = max(1, min(k, len(classes)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    data = {"path": paths, "predicted": [classes[o[0]] for o in order],
            "confidence": probs[np.arange(len(paths)), order[:, 0]],
            "probabilities": [dict(zip(classes, map(float, p))) for p in probs]}
    for j in range(k):
        data[f"top{j + 1}"] = [classes[o[j]] for o in order]
        data[f"top{j + 1}_probability"] = probs[np.arange(len(paths)), order[:, j]]
    return pd.DataFrame(data)


def format_rows(rows: pd.DataFrame) -> list[str]:
    k = sum(1 for c in rows.columns if c.startswith("top") and not c.endswith("probability"))
    return [f"{r['path']}: " + ", ".join(f"{r[f'top{j}']} {100 * r[f'top{j}_probability']:.1f}%"
                                          for j in range(1, k + 1)) for _, r in rows.iterrows()]


def write_output(path: str, rows: pd.DataFrame, skipped: list[tuple[str, str]], model: str) -> None:
    """CSV (one row per image, top-k) or JSON (top-k and every class's probability, skipped files)."""
    if path.lower().endswith(".json"):
        k = sum(1 for c in rows.columns if c.startswith("top") and not c.endswith("probability"))
        payload = {
            "model": os.path.abspath(model),
            "predictions": [{"path": r["path"], "top": [{"class": r[f"top{j}"], "probability": float(r[f"top{j}_probability"])}
                                                        for j in range(1, k + 1)],
                             "probabilities": r["probabilities"]} for _, r in rows.iterrows()],
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        }
        write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    elif path.lower().endswith(".csv"):
        write_csv(path, rows.drop(columns="probabilities"))
    else:
        raise TltoolError(f"--output {path}: give a .csv or .json file name")
