"""The exported model is the one the report describes; replacing a run keeps what tltool did not write."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

# The second phase trains everything at a learning rate that wrecks the model,
# so it ends worse than the head phase: the head phase's best must be exported.
WRECK = """
name: wreck
augment: {flip: none}
head: {dropout: 0.0}
phases:
  - name: head
    epochs: 3
    trainable: none
    optimizer: {name: adam, learning_rate: 0.05}
  - name: wreck
    epochs: 1
    trainable: all
    batchnorm: train
    optimizer: {name: sgd, learning_rate: 10.0}
early_stopping: null
calibrate: false
"""


@pytest.fixture(scope="module")
def wrecked_run(tiny_data, tmp_path_factory):
    """A fit with --overwrite into an earlier run that also holds the user's own files."""
    out = tmp_path_factory.mktemp("wreck") / "run"
    (out / "data").mkdir(parents=True)
    (out / ".tltool-run").write_text("{}\n")
    (out / "recipe.yaml").write_text("name: old\n")
    (out / "model.keras").write_text("an old model")
    (out / "thesis.md").write_text("mine")
    (out / "data" / "notes.txt").write_text("mine too")
    (out / "data" / "duplicates.csv").write_text("group,path,label,split\n0,old.png,x,train\n")  # tltool's own
    recipe = out.parent / "wreck.yaml"
    recipe.write_text(WRECK)
    result = run_cli("fit", tiny_data, "-b", "mobilenet", "--weights", "none", "--image-size", 32,
                     "--batch-size", 8, "--recipe", recipe, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.mark.slow
def test_overwrite_replaces_only_what_tltool_wrote(wrecked_run):
    assert open(os.path.join(wrecked_run, "thesis.md")).read() == "mine"
    assert open(os.path.join(wrecked_run, "data", "notes.txt")).read() == "mine too"
    assert "name: wreck" in open(os.path.join(wrecked_run, "recipe.yaml")).read()
    assert os.path.getsize(os.path.join(wrecked_run, "model.keras")) > 1000
    assert not os.path.exists(os.path.join(wrecked_run, "data", "duplicates.csv"))  # the new data has no copies


@pytest.mark.slow
def test_the_best_epoch_across_phases_is_exported_and_reported(wrecked_run, tiny_data, tmp_path):
    import tltool

    history = pd.read_csv(os.path.join(wrecked_run, "history.csv"))
    head = history[history["phase"] == "head"]
    wreck = history[history["phase"] == "wreck"]
    assert wreck["val_loss"].isna().all() or wreck["val_loss"].min() > head["val_loss"].min()  # it got worse
    best = head.loc[head["val_loss"].idxmin()]
    metrics = json.load(open(os.path.join(wrecked_run, "metrics.json")))
    assert metrics["exported"]["phase"] == "head" and metrics["exported"]["epoch"] == int(best["epoch"])
    assert metrics["exported"]["value"] == pytest.approx(best["val_loss"], rel=1e-6)
    assert history["exported"].sum() == 1 and history.loc[history["exported"], "epoch"].item() == int(best["epoch"])
    assert "phase 'head' epoch" in open(os.path.join(wrecked_run, "report.md")).read()
    # The exported model scores as the report says, and as that epoch did.
    assert metrics["log_loss"] == pytest.approx(best["val_loss"], abs=2e-3)
    folder, evaluation = tltool.evaluate(wrecked_run, tiny_data, split="val", out=str(tmp_path / "e"))
    assert evaluation.metrics["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert evaluation.metrics["log_loss"] == pytest.approx(metrics["log_loss"], abs=1e-6)
    model = tltool.load_model(wrecked_run)
    state = json.load(open(os.path.join(wrecked_run, "checkpoints", "state.json")))
    best = state["files"]["best"]
    assert best["epoch"] == metrics["exported"]["epoch"]
    saved = _arrays(os.path.join(wrecked_run, "checkpoints", best["backbone"]))
    saved += _arrays(os.path.join(wrecked_run, "checkpoints", best["head"]))
    saved = {_key(a): a for a in saved}
    for weight in model.get_layer("backbone").weights + model.get_layer("predictions").weights:
        np.testing.assert_array_equal(weight.numpy(), saved[_key(weight.numpy())])  # each is the best epoch's


def _arrays(path):
    import h5py

    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def _key(array):
    return (array.shape, float(np.asarray(array, np.float64).sum()), float(np.abs(np.asarray(array, np.float64)).sum()))


@pytest.mark.slow
def test_evaluating_the_training_folder_without_split_warns(wrecked_run, tiny_data, tmp_path):
    result = run_cli("evaluate", wrecked_run, tiny_data, "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    assert "training images are scored" in result.output


def test_directory_replacement_always_leaves_one_of_them(tmp_path):
    from tltool.files import atomic_path

    target = tmp_path / "saved"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_path(str(target)) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "new"), "w").write("new")
        assert (target / "old").exists()  # until the new one is complete
    assert sorted(os.listdir(target)) == ["new"]
    assert [n for n in os.listdir(tmp_path) if n != "saved"] == []


def test_an_atomic_write_flushes_what_it_wrote_and_its_folder_not_the_folders_other_files(tmp_path, monkeypatch):
    from tltool.files import atomic_path

    (tmp_path / "big").mkdir()
    for i in range(3):  # a run's checkpoints, say: flushing them at every write cost 36 s of a 50 s evaluation
        (tmp_path / "big" / f"other_{i}").write_text("x")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *args: opened.append(os.path.basename(path)) or real_open(path, *args))
    with atomic_path(str(tmp_path / "saved")) as tmp:
        os.makedirs(os.path.join(tmp, "inner"))
        open(os.path.join(tmp, "inner", "new"), "w").write("new")
    assert "new" in opened and "inner" in opened and tmp_path.name in opened  # the file, its folders, the rename
    assert not any(name.startswith("other_") or name == "big" for name in opened)
