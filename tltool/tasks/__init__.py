"""The tasks tltool trains, in one table: each a module that subclasses `tltool.tasks.base.Task`."""

from __future__ import annotations

from tltool.errors import TltoolError, did_you_mean
from tltool.tasks.base import Task
from tltool.tasks.single_label import SingleLabel

TASKS: dict[str, Task] = {task.name: task for task in (SingleLabel(),)}
DEFAULT = SingleLabel.name


def get_task(name: str | None = None) -> Task:
    """The task of this name (None: single-label, what models from before tasks were).

    Raises:
        TltoolError: an unknown name, with the known ones.
    """
    key = name or DEFAULT
    if key not in TASKS:
        raise TltoolError(f"task {key!r}: not a task tltool knows{did_you_mean(key, TASKS)}; "
                          f"known: {', '.join(TASKS)}")
    return TASKS[key]
