"""The images a user points `predict` or `explain` at: files and folders, expanded, with the unusable ones set aside."""

from __future__ import annotations

import os

from tltool.data.scan import first_bytes_problem, is_hidden
from tltool.errors import TltoolError


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
        reason = first_bytes_problem(path)
        if reason:
            skipped.append((path, reason))
        else:
            usable.append(path)
    return usable, skipped


OUTPUT_KINDS = (".csv", ".json")


def output_kind(path: str) -> str:
    """'csv' or 'json' for a predictions file name.

    Raises:
        TltoolError: any other ending.
    """
    if not path.lower().endswith(OUTPUT_KINDS):
        raise TltoolError(f"--output {path}: give a .csv or .json file name")
    return path.lower().rsplit(".", 1)[1]
