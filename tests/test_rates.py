"""Learning rates: discriminative rates per freeze group, the range test, and `learning_rate: auto`."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

FROZEN = """
name: frozen
augment: {flip: none}
head: {dropout: 0.0}
phases:
  - {name: head, epochs: 2, trainable: none, optimizer: {name: adam, learning_rate: LR}}
early_stopping: null
calibrate: false
"""


def _one_step_updates(optimizer_name, factors, weight_decay=None):
    """Two variables with the same gradient, one optimizer step: how far each moved."""
    import keras

    from tltool.recipe.schema import Phase
    from tltool.training.optim import make_optimizer

    phase = Phase(name="p", epochs=1, optimizer={"name": optimizer_name, "learning_rate": 0.01,
                                                 "weight_decay": weight_decay})
    variables = [keras.Variable(np.zeros((3,), "float32")) for _ in factors]  # from 0: no rounding in the change
    optimizer = make_optimizer(phase, 1, list(zip(variables, factors)))
    optimizer.apply([keras.ops.convert_to_tensor(np.array([0.5, -1.0, 2.0], "float32"))] * len(factors), variables)
    return [np.abs(np.asarray(v)) for v in variables]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_each_group_moves_by_its_own_rate(name):
    first, second, third = _one_step_updates(name, [1.0, 0.1, 0.01])
    assert first.min() > 0
    np.testing.assert_allclose(second, first * 0.1, rtol=1e-4)
    np.testing.assert_allclose(third, first * 0.01, rtol=1e-4)


def test_weight_decay_is_scaled_with_the_rate():
    import keras

    from tltool.recipe.schema import Phase

    # A zero gradient leaves only the decoupled decay: lr * wd * factor of each weight.
    from tltool.training.optim import make_optimizer

    phase = Phase(name="p", epochs=1, optimizer={"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.5})
    variables = [keras.Variable(np.ones((2,), "float32")) for _ in range(2)]
    optimizer = make_optimizer(phase, 1, [(variables[1], 0.2)])
    optimizer.apply([keras.ops.zeros((2,))] * 2, variables)
    np.testing.assert_allclose(1 - np.asarray(variables[0]), 0.1 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(1 - np.asarray(variables[1]), 0.1 * 0.5 * 0.2, rtol=1e-5)


def test_rates_spread_geometrically_from_low_to_the_head():
    from tltool.recipe.schema import RateRange
    from tltool.training.optim import group_rates

    rates = group_rates(RateRange(low=1e-5, high=1e-3), ["stage3", "stage4"])
    assert list(rates) == ["stage3", "stage4", "head"]
    assert [rates[k] for k in rates] == pytest.approx([1e-5, 1e-4, 1e-3])
    assert group_rates(3e-4, ["a", "b"]) == {"a": 3e-4, "b": 3e-4, "head": 3e-4}
    assert group_rates(RateRange(low=1e-5, high=1e-3), []) == {"head": 1e-3}


def test_a_real_phase_gives_every_backbone_variable_its_groups_rate(tiny_data, backbone_file, tmp_path):
    """Through Session: the optimizer of a phase with {low, high} applies each group's rate to its variables."""
    from conftest import new_session

    session = new_session({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "phases": [
        {"name": "top", "epochs": 1, "trainable": {"last_groups": 2},
         "optimizer": {"name": "sgd", "momentum": 0.0, "learning_rate": {"low": 1e-4, "high": 1e-2}}}]},
        tiny_data, str(tmp_path / "run"))
    session.enter_phase(0)
    model = session.model_for(False)
    session.compile_phase(model, 0)
    rates = session.group_rates(0)
    assert list(rates) == ["block4", "block5", "head"] and rates["block5"] == pytest.approx(1e-3)
    before = [np.array(v) for v in model.trainable_variables]
    grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    model.optimizer.apply(grads, model.trainable_variables)
    group_of = {}
    for group in session.clf.backbone.groups:
        for layer in group.layers:
            for w in layer.trainable_weights:
                group_of[id(w)] = group.name
    seen = set()
    for variable, old in zip(model.trainable_variables, before):
        group = group_of.get(id(variable), "head")
        moved = np.abs(np.asarray(variable) - old).max()  # SGD without momentum: rate x gradient of 1
        assert moved == pytest.approx(rates[group], rel=1e-3), (variable.path, group)
        seen.add(group)
    assert seen == {"block4", "block5", "head"}


def test_plan_shows_each_groups_rate():
    result = run_cli("plan", "--backbone", "resnet50", "--recipe", "fine-tune")
    assert result.exit_code == 0, result.output
    assert "learning rates" in result.output
    # The recipe's {low: 1e-5, high: 3e-4}, spread geometrically over ResNet50's five groups and the head.
    assert "stem 1e-05, stage1 1.97e-05, stage2 3.9e-05, stage3 7.7e-05, stage4 0.000152, head 0.0003" in result.output


@pytest.fixture(scope="module")
def swept(tiny_data, backbone_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lr")
    recipe = folder / "frozen.yaml"
    recipe.write_text(FROZEN.replace("LR", "1.0e-3"))
    result = run_cli("lr-find", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--batch-size", 4, "--recipe", recipe, "--out", folder / "sweep")
    assert result.exit_code == 0, result.output
    return folder / "sweep", result.output


@pytest.mark.slow
def test_lr_find_suggests_a_finite_rate_inside_the_sweep(swept):
    folder, output = swept
    phase = next(x for x in output.splitlines() if x.startswith("phase 1/1"))
    assert "a learning-rate sweep of up to 100 steps" in phase and "epoch(s)" not in phase
    table = pd.read_csv(folder / "lr_find.csv")
    assert 10 <= len(table) <= 100 and np.isfinite(table["loss"]).all()
    assert table["learning_rate"].is_monotonic_increasing
    line = next(x for x in output.splitlines() if x.startswith("suggested learning rate"))
    suggested = float(line.split()[3])
    assert table["learning_rate"].min() <= suggested <= table["learning_rate"].max()
    assert "minimum of the smoothed loss / 10" in line
    assert (folder / "lr_find.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_sweep_leaves_the_model_as_it_found_it(tiny_data, tmp_path):
    from conftest import new_session

    # MobileNet: BatchNorm statistics that a sweep in training mode moves (and must put back)
    session = new_session({"backbone": "mobilenet", "weights": "none", "image_size": 32, "batch_size": 4,
                           "phases": [{"name": "top", "epochs": 1, "trainable": {"last_groups": 2},
                                       "batchnorm": "train"}]}, tiny_data, str(tmp_path / "run"))
    before = [np.array(w) for w in session.clf.model.weights]
    sweep = session.sweep_rates(0, session.enter_phase(0))
    assert sweep.rates[-1] > sweep.rates[0] * 1e3  # it really trained, through a wide range of rates
    for old, new in zip(before, session.clf.model.weights):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.slow
def test_auto_rate_is_chosen_before_the_phase_and_recorded(tiny_data, backbone_file, tmp_path):
    import yaml

    recipe = tmp_path / "auto.yaml"
    recipe.write_text(FROZEN.replace("LR", "auto"))
    result = run_cli("fit", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--batch-size", 4, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    chosen = recorded["phases"][0]["optimizer"]["learning_rate"]
    assert isinstance(chosen, float) and chosen > 0
    assert f"learning rate for phase 'head': {chosen:.3g}" in result.output
    sweep = pd.read_csv(tmp_path / "run" / "lr_find-head.csv")
    assert sweep["learning_rate"].min() <= chosen <= sweep["learning_rate"].max()
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["learning_rate"].iloc[0] == pytest.approx(chosen, rel=1e-5)  # the phase trained at it


def test_an_epoch_that_would_train_on_nothing_is_an_error_naming_the_count(backbone_file, tmp_path):
    """Files that vanish after the scan are skipped by the pipeline; if that leaves nothing, training refuses."""
    import shutil

    from tltool.errors import DatasetError

    from conftest import make_dataset, new_session

    data = make_dataset(tmp_path / "data", per_class=4)
    session = new_session({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "batch_size": 4,
                           "phases": [{"name": "head", "epochs": 1, "trainable": "none"}]}, data, str(tmp_path / "run"))
    for sample in session.dataset.split("train"):
        os.unlink(sample.path)
    shutil.rmtree(session.run.cache_dir, ignore_errors=True)
    with pytest.raises(DatasetError, match="only 0 of the 9 training images decode now"):
        session.train()
