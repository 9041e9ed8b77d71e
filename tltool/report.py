"""Writing an evaluation to disk: figures as CSV/JSON files."""

from __future__ import annotations

import os

from tltool.files import write_atomic, write_csv, write_json
from tltool.metrics import Evaluation


def write_metrics(folder: str, evaluation: Evaluation, split: str) -> None:
    """per_class.csv, metrics.json and confusion_matrix.csv in `folder`."""
    write_csv(os.path.join(folder, "per_class.csv"), evaluation.per_class)
    write_json(os.path.join(folder, "metrics.json"), {"split": split, **evaluation.metrics})
    write_atomic(os.path.join(folder, "confusion_matrix.csv"), evaluation.confusion.to_csv(index_label="true/predicted"))
