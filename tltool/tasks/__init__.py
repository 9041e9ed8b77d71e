"""The tasks tltool trains, in one table: each a module that subclasses `tltool.tasks.base.Task`."""

from __future__ import annotations

from tltool.errors import RecipeError, TltoolError, did_you_mean
from tltool.tasks.base import Task
from tltool.tasks.multi_label import MultiLabel
from tltool.tasks.single_label import SingleLabel

TASKS: dict[str, Task] = {task.name: task for task in (SingleLabel(), MultiLabel())}
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


def task_for(name: str, dataset) -> Task:
    """The task a recipe's `task` key (auto, single-label or multi-label) gives on `dataset`.

    ``auto`` is multi-label exactly when the dataset is a CSV with a ``labels``
    column or one-hot columns (a ``label`` column stays single-label).

    Raises:
        TltoolError: a task the dataset's layout cannot give.
    """
    if name == "auto":
        return get_task(MultiLabel.name if dataset.multi_label else SingleLabel.name)
    if name == MultiLabel.name and not dataset.multi_label:
        raise TltoolError(f"task: multi-label needs a CSV with a labels column (or one-hot columns); {dataset.root} "
                          "gives one class per image (class folders or a label column)")
    if name == SingleLabel.name and dataset.multi_label:
        raise TltoolError(f"task: single-label, but {dataset.root}'s CSV gives several labels per image (a labels "
                          "column or one-hot columns); use task: multi-label (or auto)")
    return get_task(name)


def check_monitor(recipe, task, source: str | None = None) -> None:
    """The recipe's early-stopping monitor is one the task's training logs.

    Raises:
        RecipeError: e.g. val_accuracy for a multi-label run.
    """
    monitor = recipe.early_stopping.monitor if recipe.early_stopping else "val_loss"
    if monitor not in task.monitors:
        raise RecipeError(source or f"recipe {recipe.name}", [
            f"early_stopping.monitor {monitor}: a {task.name} run logs {' or '.join(task.monitors)}; give one of them"])
