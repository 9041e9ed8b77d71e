"""`fit`, `fit --resume` and `lr-find`: from a folder of images to a trained, evaluated, exported classifier.

Order of work, cheapest checks first so that nothing trains until everything
is known to be valid: recipe and overrides -> backbone name, image size and
every group name the recipe uses -> weights path -> run directory -> dataset
scan and split -> backbone build -> every phase's freeze plan -> training ->
model files -> evaluation. The training itself is
`tltool.training.session.Session`; the last steps are
`tltool.workflows.finishing`.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager

from tltool import __version__
from tltool.console import say, warn
from tltool.data.dataset import Dataset, load_dataset
from tltool.errors import TltoolError, did_you_mean
from tltool.models.registry import get_backbone
from tltool.models.weights import check_weights_file, weights_source
from tltool.recipe import Recipe, recipe_from_dict
from tltool.runs.run import Run, default_run_dir
from tltool.tasks import check_monitor, task_for
from tltool.workflows.finishing import Finished, finish
from tltool.workflows.resolving import default_recipe_for, report_dataset, require_outside, resolve_recipe


def fit(data: str | None, *, recipe: str | Recipe | None = None, out: str | None = None, overwrite: bool = False,
        split_from: str | None = None, progress: bool = True, resume: str | None = None,
        **overrides) -> tuple[Run, Finished | None]:
    """Train a classifier on a folder of images and write a run directory.

    The arguments are those of `tltool.fit` (`tltool.options.FIT`).

    Returns:
        (the run directory, what its last steps made; None on a worker that is not the chief).

    Raises:
        TltoolError: bad input of any kind, before training starts.
        Interrupted: Ctrl-C; the run can be resumed from its last completed epoch.
    """
    if resume:
        given = {"recipe": recipe, "out": out, "overwrite": overwrite or None, "split_from": split_from, **overrides}
        return resume_run(resume, data, progress, **given)
    recipe = resolve_recipe(recipe or default_recipe_for(data), **overrides)
    with _session(data, recipe, out or default_run_dir(recipe.backbone), overwrite, split_from, progress) as session:
        finished = _train(session)
    return session.run, finished


def resume_run(run_dir: str, data: str | None = None, progress: bool = True, **flags) -> tuple[Run, Finished | None]:
    """Continue an interrupted run from its last completed epoch, as if it had never stopped.

    The recipe is the one recorded in the run's recipe.yaml, the dataset the
    one it recorded, checked file by file against its data/index.csv; the
    weights, optimizer state, schedule, early stopping and best epoch come
    from checkpoints/ (`tltool.training.checkpoint`).

    Raises:
        TltoolError: not a tltool run, from another checkpoint format, a flag
            that would change the recipe, or a dataset that changed.
    """
    from tltool.training.checkpoint import FORMAT, Checkpoints

    run = Run(run_dir)
    changed = [key for key, value in flags.items() if value not in (None, False)]
    if changed:
        raise TltoolError(f"--{changed[0].replace('_', '-')}: a resumed run keeps its recorded recipe "
                          f"({run.recipe_file}); drop the flag, or start a new run with --recipe {run.recipe_file}")
    if not Run.is_run(run.path):
        raise TltoolError(f"--resume {run.path}: not a tltool run directory (no .tltool-run file); "
                          "give the folder that `tltool fit` made")
    recorded = run.recipe
    provenance = recorded.pop("provenance", None) or {}
    state = Checkpoints(run.checkpoints_dir, None).load_state()
    if state is None or not recorded:
        raise TltoolError(f"--resume {run.path}: no recipe.yaml or checkpoint to resume from; "
                          "start the run again with --overwrite")
    if state.format != FORMAT:
        raise TltoolError(f"--resume {run.path}: written by tltool {state.tltool or '?'} (checkpoint format "
                          f"{state.format}); this tltool {__version__} resumes format {FORMAT} only")
    if provenance.get("finished") and os.path.isfile(run.model_file):
        say(f"{run.path} finished on {provenance['finished']}; nothing to resume")
        return run, None
    recorded_data = provenance.get("dataset")
    if data and recorded_data and os.path.abspath(data) != os.path.abspath(recorded_data):
        raise TltoolError(f"{data}: this run trained on {recorded_data}; give that folder, or no DATA at all")
    recipe = recipe_from_dict(recorded, run.recipe_file)
    if recipe.augment.aug_mix:
        raise TltoolError(f"--resume {run.path}: its recipe uses aug_mix, whose operations Keras 3 draws from "
                          "Python's own random numbers, so a resumed run would not continue exactly as an uninterrupted one; "
                          f"start it again (tltool fit DATA --recipe {run.recipe_file} --overwrite --out {run.path})")
    with _session(data or recorded_data, recipe, run.path, False, run.path, progress, provenance) as session:
        finished = _train(session)
    return session.run, finished


def _train(session) -> Finished | None:
    session.train()
    if session.dist.name == "multi-worker":  # equal on every worker, or the workers did not train as one
        say(f"trained weights fingerprint: {session.fingerprint()}")
    if not session.dist.chief:
        say(f"worker {session.dist.cluster.index} done; the chief writes the run directory")
        return None
    finished = finish(session)
    session.provenance["finished"] = _now()
    session.run.write_recipe(session.recipe, session.provenance)  # with the rates `auto` chose
    return finished


def lr_find(data: str, *, phase: str | None = None, recipe: str | Recipe | None = None, out: str | None = None,
            overwrite: bool = False, split_from: str | None = None, progress: bool = True, **overrides):
    """The learning-rate range test at the start of a recipe's phase; writes lr_find.csv and lr_find.png.

    The phases before `phase` (default: the first) train first, as the
    recipe says, so the sweep starts where that phase would. The model's
    weights are restored after the sweep.

    Returns:
        (the `tltool.training.lr_find.Sweep`, the folder with lr_find.csv and lr_find.png).
    """
    recipe = resolve_recipe(recipe or default_recipe_for(data), **overrides)
    names = [p.name for p in recipe.phases]
    if phase is not None and phase not in names:
        raise TltoolError(f"--phase {phase}: recipe {recipe.name!r} has no such phase{did_you_mean(phase, names)}; "
                          f"phases: {', '.join(names)}")
    index = names.index(phase) if phase else 0
    out = out or default_run_dir(f"{recipe.backbone}-lr-find")
    with _session(data, recipe, out, overwrite, split_from, progress) as session:
        from tltool.training.lr_find import write_sweep  # imports Keras: only once TensorFlow loaded quietly

        if index:
            say(f"training the phases before {names[index]!r} first: {', '.join(names[:index])}")
            session.train(index)
        sweep = session.sweep_rates(index, session.enter_phase(index, sweep=True))
        write_sweep(sweep, session.run_dir)
    return sweep, session.run_dir


@contextmanager
def _session(data: str, recipe: Recipe, out: str, overwrite: bool, split_from: str | None, progress: bool,
             resumed: dict | None = None):
    """A Session in a new run directory (or the run being resumed, whose provenance is `resumed`).

    Its caches are removed and the caller's global state restored at the end.
    Everything that can fail on bad input (weights, dataset, freeze plans,
    class weights) is checked before the folder exists, so a failed start
    leaves nothing behind and the same command works once the cause is fixed.
    """
    from tltool.training.distribute import cluster
    from tltool.training.session import Session
    from tltool.training.setup import prepare

    spec = get_backbone(recipe.backbone if resumed is None else _kept_backbone(recipe.backbone, Run(out)))
    source = weights_source(recipe.weights)
    if resumed is not None and recipe.strategy == "multi-worker":
        raise TltoolError("--resume: a multi-worker run cannot be resumed (the other workers keep no "
                          "checkpoints to start from); start it again")
    worker = recipe.strategy == "multi-worker" and not cluster().chief
    if worker:  # only the chief writes the run directory; this worker works in a folder of its own
        out, overwrite = tempfile.mkdtemp(prefix="tltool-worker-"), False
    if resumed is None:
        check_weights_file(recipe.weights, spec.name)
        if source == "none" and any(p.trainable == "none" or p.batchnorm == "frozen" for p in recipe.phases):
            warn(f"--weights none with recipe {recipe.name!r}: it freezes layers or BatchNorm statistics of a "
                 "random backbone, which learn nothing; --recipe from-scratch trains everything")
        Run.check_new(out, overwrite)
    dataset = load_dataset(data, recipe.data.val_split, recipe.data.test_split, recipe.seed,
                           Run(split_from) if split_from else None, progress)
    report_dataset(dataset, Run(out).duplicates_file)
    dataset.require_usable()
    if resumed is None:
        require_outside(out, dataset, "--out")
    leaked = find_leaks(dataset, recipe, Run(out).leakage_file) if resumed is None else None
    task = task_for(recipe.task, dataset)
    check_monitor(recipe, task)
    recipe.task = task.name  # the run's recipe.yaml says which task it trained
    if resumed is not None:
        check_unchanged(dataset, Run(out))
    from tltool.console import load_tensorflow

    load_tensorflow()
    with _caller_state_kept():
        session = None
        try:
            # A resumed run starts from its checkpoint; the original weights may be offline or gone.
            setup = prepare(recipe, spec, dataset, task, weights="none" if resumed is not None else None)
            run = Run(out) if resumed is not None else Run.create(out, overwrite)
            say(f"run directory: {run.path}")
            if resumed is None:
                write_dataset_files(run, dataset, leaked)
                provenance = _provenance(dataset, source, split_from)
                run.write_recipe(recipe, provenance)
                run.keep_backbone_files(spec.kept_files())
            else:
                provenance = {**resumed, "resumed": [*resumed.get("resumed", []), _now()]}
            session = Session(setup, run, resume=resumed is not None)
            session.provenance = provenance
            yield session
        finally:
            if session is not None:
                shutil.rmtree(session.run.cache_dir, ignore_errors=True)  # decoded images, features
            if worker:
                shutil.rmtree(out, ignore_errors=True)


def _kept_backbone(name: str, run: Run) -> str:
    """What a resumed run builds its backbone from (`Run.backbone_source`), said when it is the run's copy."""
    source = run.backbone_source(name)
    if source != name:
        say(f"{name} is gone: the backbone is built from the run's copy of its config ({source})")
    return source


@contextmanager
def _caller_state_kept():
    """A session sets Keras' dtype policy and every global seed, and patches Keras under a strategy; the
    caller (a notebook, a script) gets its own state back afterwards."""
    import keras

    from tltool.compat import random_state, remove_patches

    policy = keras.config.dtype_policy()
    try:
        with random_state():
            yield
    finally:
        keras.config.set_dtype_policy(policy)
        remove_patches()


def find_leaks(dataset: Dataset, recipe: Recipe, listed_in: str):
    """The validation and test images with a copy in an earlier split (`tltool.data.duplicates.leaks`), from the hashes the
    file check computed; one line says how many. None when the recipe turns the check off."""
    from tltool.data.duplicates import describe_leaks, leaks

    if not recipe.data.check_leakage:
        return None
    table = leaks(dataset.samples, dataset.infos)
    line = describe_leaks(table, dataset.images())
    if line:
        warn(f"{line}; the figures on them are optimistic; every pair: {listed_in}")
    return table


def write_dataset_files(run: Run, dataset: Dataset, leaked=None) -> None:
    """data/index.csv, data/skipped.csv, classes.json; data/leakage.csv (when checked) and data/duplicates.csv
    (when any file has an exact copy)."""
    import pandas as pd

    from tltool.data.split import index_rows
    from tltool.data.summary import duplicate_rows
    from tltool.files import write_csv

    rows = pd.DataFrame(index_rows(dataset.samples),
                        columns=["path", "labels" if dataset.multi_label else "label", "split"])
    by_rel = {s.rel: dataset.infos[s.path].sha1 for s in dataset.samples if s.path in dataset.infos}
    rows["sha1"] = rows["path"].map(by_rel)
    run.write_index(rows, pd.DataFrame([(s.rel, s.reason) for s in dataset.skipped], columns=["path", "reason"]))
    run.write_classes(dataset.classes)
    if leaked is not None:
        write_csv(run.leakage_file, leaked)
    copies = duplicate_rows(dataset)
    if copies:
        write_csv(run.duplicates_file, pd.DataFrame(copies, columns=["group", "path", "label", "split"]))


def check_unchanged(dataset: Dataset, run: Run) -> None:
    """The dataset still holds every file of the run's data/index.csv, with the same content.

    Raises:
        DatasetError: files that vanished, became unreadable or changed, named.
    """
    from tltool.errors import DatasetError

    index = run.read_index()
    now = {s.rel: dataset.infos[s.path].sha1 for s in dataset.samples if s.path in dataset.infos}
    gone = [p for p in index["path"] if p not in now]
    changed = [p for p, sha in zip(index["path"], index.get("sha1", [""] * len(index))) if p in now and sha
               and now[p] != sha]
    problems = [f"{len(gone)} file(s) vanished or became unreadable ({', '.join(gone[:3])})"] if gone else []
    problems += [f"{len(changed)} file(s) changed ({', '.join(changed[:3])})"] if changed else []
    if problems:
        raise DatasetError(f"{dataset.root} is not the dataset {run.path} trained on: {'; '.join(problems)}; "
                           "restore those files, or start a new run")


def _provenance(dataset: Dataset, weights: str, split_from: str | None) -> dict:
    import keras
    import tensorflow as tf

    return {
        "dataset": dataset.source,  # a CSV dataset's file, which `fit --resume` reads again
        "split_from": os.path.abspath(split_from) if split_from else None,
        "weights_source": weights,
        "command": " ".join(["tltool", *sys.argv[1:]]) if sys.argv[0].endswith(("tltool", "__main__.py")) else None,
        "started": _now(),
        "versions": {"tltool": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
    }


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
