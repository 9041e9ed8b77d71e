"""User-facing errors and the exit codes they map to, in one place.

Library code raises `TltoolError` (or a subclass) with a message that names
the file, key or argument, what was received and the fix. The CLI prints the
message on one line and exits with the error's code; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected exception: a bug, reported with a traceback
EXIT_INPUT = 2  # bad input: arguments, recipe, dataset, paths (as click's UsageError)
EXIT_UNAVAILABLE = 3  # something the machine cannot get: pretrained weights, a download, disk space
EXIT_EXPORT_CHECK = 4  # an exported file lost more accuracy than allowed (the file is kept)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class TltoolError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = EXIT_INPUT


class RecipeError(TltoolError):
    """A recipe file that does not validate; one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {p}" for p in problems]
        super().__init__("\n".join(lines))


class DatasetError(TltoolError):
    """A dataset that cannot be used as it is."""


class UnavailableError(TltoolError):
    """Something needed from outside (weights, a dataset download) cannot be had."""

    exit_code = EXIT_UNAVAILABLE


class ExportCheckFailed(TltoolError):
    """An exported file runs, but scores worse than the Keras model by more than allowed."""

    exit_code = EXIT_EXPORT_CHECK


class Interrupted(TltoolError):
    """Ctrl-C during training: the last completed epoch is checkpointed and the run can be resumed."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, run_dir: str | None = None, epoch: int | None = None):
        self.run_dir = run_dir
        saved = f"epoch {epoch} is the last one saved" if epoch else "no epoch was completed"
        resume = f"; resume with: tltool fit --resume {run_dir}" if run_dir else ""
        super().__init__(f"interrupted ({saved}){resume}")


def did_you_mean(word: str, choices, n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' for close matches of `word`, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
