"""Resume: a run killed at any moment continues where it stopped and ends as if it had never stopped.

One chain of real `tltool fit` processes on one tiny run: killed while
features are cached, interrupted with Ctrl-C, stopped by a file-size limit
while checkpointing, killed mid-epoch, killed while a checkpoint is written,
killed while the model is exported, and resumed after each. Its history and
weights are compared with an uninterrupted run of the same recipe and seed.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

# Random streams in play everywhere (flips, contrast, dropout, shuffling), a frozen phase on cached
# features, then a phase that trains the top of the backbone with discriminative rates and a schedule.
# VGG16 (random weights, no BatchNorm) gives features that tell the colours apart, so the model learns.
CHAIN = """
name: chain
augment: {flip: horizontal, contrast: 0.2}
head: {dropout: 0.3}
batch_size: 4
phases:
  - {name: head, epochs: 2, trainable: none, optimizer: {name: adam, learning_rate: 0.01}}
  - name: top
    epochs: 3
    trainable: {last_groups: 2}
    optimizer: {name: adam, learning_rate: {low: 0.0001, high: 0.001}}
    schedule: {name: cosine, warmup_epochs: 1}
early_stopping: {monitor: val_loss, patience: 5}
"""
FILE_LIMIT = 20 * 2**20  # a checkpoint of a phase that trains the backbone writes the backbone (59 MB): too large


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TLTOOL_PAUSE_AT", "TLTOOL_DEBUG")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _start(args, pause=None, limit=None):
    env = _env(**({"TLTOOL_PAUSE_AT": pause} if pause else {}))
    preexec = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None
    return subprocess.Popen([sys.executable, "-m", "tltool", "fit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=preexec)


def _until(process, text, then=None, timeout=240):
    """Read the process's output until a line contains `text`; then send `then` (a signal) and wait."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            if then is not None:
                process.send_signal(then)
            break
    rest, _ = process.communicate(timeout=timeout)
    return process.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def chain(tiny_data, backbone_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    args = ["-b", "vgg16", "--weights", backbone_file, "--image-size", "32"]
    recipe = folder / "chain.yaml"
    recipe.write_text(CHAIN)
    reference = folder / "reference"
    done = run_cli("fit", tiny_data, *args, "--recipe", recipe, "--out", reference)  # uninterrupted, in this process
    assert done.exit_code == 0, done.output
    run = folder / "run"
    resume = ["--resume", run]
    steps = {}
    steps["features"] = _until(_start([tiny_data, *args, "--recipe", recipe, "--out", run], pause="features"),
                               "paused at features", signal.SIGKILL)
    steps["ctrl-c"] = _until(_start(resume), "epoch 3 (top 1/3)", signal.SIGINT)
    steps["disk"] = _until(_start(resume, limit=FILE_LIMIT), "\0")
    steps["step"] = _until(_start(resume, pause="step@3"), "paused at step", signal.SIGKILL)
    steps["checkpoint"] = _until(_start(resume, pause="checkpoint@4"), "paused at checkpoint", signal.SIGKILL)
    steps["export"] = _until(_start(resume, pause="export"), "paused at export", signal.SIGKILL)
    for name in ("finish", "again"):  # no kill to come: in this process, which saves starting TensorFlow twice
        result = run_cli("fit", *resume)
        steps[name] = result.exit_code, result.output
    return reference, run, steps


def test_every_kill_leaves_a_run_that_resumes(chain):
    _, run, steps = chain
    for name in ("features", "step", "checkpoint", "export"):
        code, output = steps[name]
        assert code == -signal.SIGKILL, (name, output)
    code, output = steps["finish"]
    assert code == 0, output
    assert "resuming after epoch 5 (training done)" in output  # killed while exporting
    for name in ("model.keras", "saved_model/saved_model.pb", "metrics.json", "report.md", "curves.png"):
        assert os.path.exists(run / name), name
    assert not os.path.exists(run / "cache")
    assert [n for n in os.listdir(run / "checkpoints") if n.startswith(".tmp")] == []
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]  # every epoch exactly once
    assert history["phase"].tolist() == ["head", "head", "top", "top", "top"]


def test_ctrl_c_stops_with_the_resume_command(chain):
    _, run, steps = chain
    code, output = steps["ctrl-c"]
    assert code == 130, output
    assert "interrupted: stopping after the current step" in output
    assert f"interrupted (epoch 3 is the last one saved); resume with: tltool fit --resume {run}" in output
    assert "Traceback" not in output


def test_a_full_disk_stops_with_one_clear_line_and_keeps_the_last_checkpoint(chain):
    _, run, steps = chain
    code, output = steps["disk"]
    assert code == 3, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot write a checkpoint in {run / 'checkpoints'}" in errors[0], output
    assert "File too large" in errors[0] and "MB" in errors[0] and "Traceback" not in output
    code, output = steps["step"]
    assert "resuming after epoch 3" in output  # the checkpoint before the failed write was intact


def test_resumed_run_equals_an_uninterrupted_one(chain):
    import keras

    import tltool

    reference, run, _ = chain
    ours, theirs = pd.read_csv(run / "history.csv"), pd.read_csv(reference / "history.csv")
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose(ours[column], theirs[column], atol=1e-5, err_msg=column)
    assert ours["loss"].iloc[-1] < 0.9 * ours["loss"].iloc[2]  # the model really learned: losses that can differ
    mine, yours = tltool.load_model(run), tltool.load_model(reference)
    for a, b in zip(mine.weights, yours.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=a.path)
    assert json.load(open(run / "metrics.json"))["exported"] == json.load(open(reference / "metrics.json"))["exported"]
    assert isinstance(mine, keras.Model)


def test_a_finished_run_resumed_says_so(chain):
    _, run, steps = chain
    code, output = steps["again"]
    assert code == 0 and "nothing to resume" in output, output


def test_a_torn_checkpoint_falls_back_to_the_one_before(chain, tmp_path, capsys):
    from tltool.training.checkpoint import Checkpoints

    _, run, _ = chain
    folder = tmp_path / "checkpoints"
    shutil.copytree(run / "checkpoints", folder)
    latest = json.load(open(folder / "state.json"))["files"]["latest"]
    previous = Checkpoints(str(folder), None).load_state()
    with open(folder / latest["optimizer"], "r+b") as f:
        f.truncate(100)
    state = Checkpoints(str(folder), None).load_state()
    assert "missing or torn; using the checkpoint before it" in capsys.readouterr().err
    assert state is not None and state.epoch <= previous.epoch


def test_resume_refuses_what_would_make_it_another_run(chain, tiny_data, tmp_path):
    reference, _, _ = chain
    result = run_cli("fit", "--resume", reference, "--epochs", "3")
    assert result.exit_code == 2 and "--epochs: a resumed run keeps its recorded recipe" in result.output
    result = run_cli("fit", "--resume", tmp_path)
    assert result.exit_code == 2 and "not a tltool run directory" in result.output
    copy = tmp_path / "old"
    shutil.copytree(reference, copy)
    state = json.load(open(copy / "checkpoints" / "state.json"))
    json.dump({**state, "format": 99}, open(copy / "checkpoints" / "state.json", "w"))
    result = run_cli("fit", "--resume", copy)
    assert result.exit_code == 2 and "checkpoint format 99" in result.output


def test_resume_refuses_a_dataset_that_changed(chain, tiny_data, tmp_path):
    import yaml

    reference, _, _ = chain
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    recipe = yaml.safe_load(open(copy / "recipe.yaml"))
    recipe["provenance"]["dataset"] = str(data)
    del recipe["provenance"]["finished"]
    yaml.safe_dump(recipe, open(copy / "recipe.yaml", "w"))
    os.unlink(data / "leaf" / "leaf_3.jpg")
    from conftest import write_image

    write_image(str(data / "sky" / "sky_2.png"), (0, 0, 0))
    result = run_cli("fit", "--resume", copy)
    assert result.exit_code == 2, result.output
    assert "not the dataset" in result.output and "vanished" in result.output and "changed (sky/sky_2.png)" in result.output


def test_a_run_whose_history_was_lost_still_resumes_and_exports(chain, tmp_path):
    import yaml

    reference, _, _ = chain
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    recipe = yaml.safe_load(open(copy / "recipe.yaml"))
    del recipe["provenance"]["finished"]  # as if it had been killed while exporting
    yaml.safe_dump(recipe, open(copy / "recipe.yaml", "w"))
    os.unlink(copy / "history.csv")
    result = run_cli("fit", "--resume", copy)
    assert result.exit_code == 0, result.output
    assert "history.csv is missing" in result.output
    assert json.load(open(copy / "metrics.json"))["exported"]["epoch"] >= 1


def test_a_run_with_aug_mix_is_not_resumed_inexactly(chain, tmp_path):
    import yaml

    reference, _, _ = chain
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    recipe = yaml.safe_load(open(copy / "recipe.yaml"))
    del recipe["provenance"]["finished"]
    recipe["augment"]["aug_mix"] = 0.5
    yaml.safe_dump(recipe, open(copy / "recipe.yaml", "w"))
    result = run_cli("fit", "--resume", copy)
    assert result.exit_code == 2 and "uses aug_mix" in result.output and "start it again" in result.output
