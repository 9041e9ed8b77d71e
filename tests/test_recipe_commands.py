"""Recipe commands, the resolved recipe, class weights and schedules."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tltool.data.dataset import load_dataset
from tltool.errors import RecipeError, TltoolError
from tltool.recipe import load_recipe, recipe_from_dict
from tltool.tasks import get_task
from tltool.training.optim import PhaseSchedule

from conftest import make_dataset, run_cli

class_weights = get_task().class_weights

HERE = os.path.dirname(__file__)


def _write(path, data):
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


def test_recipes_lists_every_shipped_recipe_with_its_description():
    result = run_cli("recipes")
    assert result.exit_code == 0
    for name in ("linear-probe", "fine-tune-top", "full-fine-tune", "gradual-unfreeze", "small-data"):
        assert name in result.output
    assert load_recipe("small-data").description in result.output
    assert re.search(r"^fine-tune \(default\) ", result.output, re.M)  # which one `fit` takes without --recipe


def test_recipes_show_prints_the_file_with_comments():
    result = run_cli("recipes", "show", "gradual-unfreeze")
    assert result.exit_code == 0 and result.output.startswith("# gradual-unfreeze")


def test_unknown_recipe_name_suggests():
    result = run_cli("recipes", "show", "fine-tune-tip")
    assert result.exit_code == 2 and "did you mean: fine-tune-top" in result.output


@pytest.mark.slow
def test_validate_checks_group_names_against_a_backbone_without_tensorflow(tmp_path):
    path = _write(tmp_path / "r.yaml", {"phases": [{"name": "ft", "epochs": 1, "trainable": {"groups": ["stage9"]}}]})
    code = ("import sys; from click.testing import CliRunner; from tltool.cli import cli; "
            f"r = CliRunner().invoke(cli, ['recipes', 'validate', {path!r}, '-b', 'resnet50']); "
            "print(r.exit_code); print(r.output); print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "2"
    assert "phases[0].trainable.groups: resnet50 has no group 'stage9'" in out
    assert "its groups: stem, stage1, stage2, stage3, stage4" in out
    assert out.strip().endswith("NO-TF")


def test_validate_accepts_a_good_file_and_checks_layer_names_when_needed(tmp_path):
    good = _write(tmp_path / "good.yaml", {"phases": [
        {"name": "a", "epochs": 2, "trainable": {"from_layer": "conv5_block1_1_conv"}}]})
    assert run_cli("recipes", "validate", good, "-b", "resnet50").exit_code == 0
    bad = _write(tmp_path / "bad.yaml", {"phases": [
        {"name": "a", "epochs": 2, "trainable": {"from_layer": "conv5_block1_1_cnv"}}]})
    result = run_cli("recipes", "validate", bad, "-b", "resnet50")
    assert result.exit_code == 2 and "did you mean: conv5_block1_1_conv" in result.output


def test_a_recipe_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    result = run_cli("recipes", "validate", path)
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not marker.exists()


def test_fit_refuses_an_invalid_recipe_before_doing_anything(tiny_data, tmp_path):
    path = _write(tmp_path / "r.yaml", {"phases": [{"name": "a", "epochs": 0, "optimizer": {"learning_rate": -1}}]})
    result = run_cli("fit", tiny_data, "--recipe", path, "--weights", "none", "--out", tmp_path / "run")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path}: phases[0].epochs: must be >= 1 (got 0)",
                      f"error: {path}: phases[0].optimizer.learning_rate: must be > 0.0 (got -1)"]
    assert not (tmp_path / "run").exists()


def test_schema_command_matches_the_committed_schema():
    result = run_cli("recipes", "schema")
    schema = json.loads(result.output)
    with open(os.path.join(HERE, "..", "recipes", "recipe.schema.json")) as f:
        assert schema == json.load(f), "regenerate recipes/recipe.schema.json with `tltool recipes schema`"
    assert schema["additionalProperties"] is False and "phases" in schema["required"]


def test_plan_counts_trainable_and_frozen_parameters():
    result = run_cli("plan", "-b", "mobilenetv2", "-r", "fine-tune-top", "--classes", 3)
    assert result.exit_code == 0, result.output
    assert "1280 features x 3 classes + 3 biases = 3,843 parameters" in result.output
    head = next(line for line in result.output.splitlines() if line.startswith("head "))
    assert head.split()[-3:] == ["3,843", "2,257,984", "0.2%"]
    fine = next(line for line in result.output.splitlines() if line.startswith("fine-tune"))
    assert "block_16, Conv_1" in fine


@pytest.mark.slow
def test_resolved_recipe_repeats_the_run(tiny_data, backbone_file, tmp_path):
    first_run = tmp_path / "first"
    result = run_cli("fit", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "linear-probe", "--epochs", 2, "--seed", 5, "--out", first_run)
    assert result.exit_code == 0, result.output
    first = load_recipe(str(first_run / "recipe.yaml"))
    result = run_cli("fit", tiny_data, "--recipe", first_run / "recipe.yaml", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    second = load_recipe(str(tmp_path / "again" / "recipe.yaml"))
    assert first.model_dump(exclude={"provenance"}) == second.model_dump(exclude={"provenance"})
    with open(first_run / "data" / "index.csv") as a, open(tmp_path / "again" / "data" / "index.csv") as b:
        assert a.read() == b.read()
    history = [pd.read_csv(folder / "history.csv") for folder in (first_run, tmp_path / "again")]
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=1e-6)  # the same run again


def test_auto_class_weights_are_inverse_frequency(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=5, classes={"a": (0, 0, 0), "b": (200, 200, 200)})
    for i in range(5, 15):
        os.link(os.path.join(data, "a", "a_0.png"), os.path.join(data, "a", f"extra_{i}.png"))
    ds = load_dataset(data, val_split=0.0, progress=False)
    auto = recipe_from_dict({"phases": [{"name": "x", "epochs": 1}], "class_weight": "auto"})
    assert class_weights(auto, ds) == pytest.approx({0: 20 / (2 * 15), 1: 20 / (2 * 5)})
    explicit = recipe_from_dict({"phases": [{"name": "x", "epochs": 1}], "class_weight": {"b": 3.0}})
    assert class_weights(explicit, ds) == {0: 1.0, 1: 3.0}
    wrong = recipe_from_dict({"phases": [{"name": "x", "epochs": 1}], "class_weight": {"bb": 3.0}})
    with pytest.raises(TltoolError, match="no class 'bb'.*did you mean: b"):
        class_weights(wrong, ds)


def test_balanced_classes_are_not_weighted(fitted_run, tmp_path):
    assert json.load(open(os.path.join(fitted_run, "class_weights.json"))) == {}  # 8 images in every class
    data = make_dataset(tmp_path / "d", per_class=5, classes={"a": (0, 0, 0), "b": (200, 200, 200)})
    for i in range(5, 7):  # 7 against 5: below the 1.5x threshold
        os.link(os.path.join(data, "a", "a_0.png"), os.path.join(data, "a", f"extra_{i}.png"))
    auto = recipe_from_dict({"phases": [{"name": "x", "epochs": 1}], "class_weight": "auto"})
    assert class_weights(auto, load_dataset(data, val_split=0.0, progress=False)) is None


@pytest.mark.parametrize("kind, step, expected", [
    ("constant", 0, 0.1), ("constant", 4, 0.5), ("constant", 9, 1.0), ("constant", 50, 1.0),
    ("cosine", 10, 1.0), ("cosine", 60, 0.5), ("cosine", 110, 0.0),
    ("exponential", 30, 0.5 ** 2), ("step", 39, 1.0), ("step", 40, 0.5),
])
def test_schedules_warm_up_then_decay(kind, step, expected):
    schedule = PhaseSchedule(kind, 1.0, total_steps=110, warmup_steps=10, decay_rate=0.5, steps_per_epoch=10,
                             step_epochs=3)
    assert float(np.asarray(schedule(step))) == pytest.approx(expected, abs=1e-6)


def test_yaml_errors_name_the_line(tmp_path):
    path = _write(tmp_path / "broken.yaml", "name: x\nphases:\n  - name: a\n   epochs: 1\n")
    with pytest.raises(RecipeError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_recipe(path)
