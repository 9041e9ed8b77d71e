"""Recipes: shipped files load, bad files give one precise error per problem."""

import re

import pytest

from tltool.errors import RecipeError, TltoolError
from tltool.recipe import apply_overrides, load_recipe, recipe_from_dict, shipped_recipes

SHIPPED = sorted(shipped_recipes())  # every recipe in recipes/, including those added later


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads_and_is_documented(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    text = open(shipped_recipes()[name], encoding="utf-8").read()
    assert text.startswith(f"# {name} ")  # documented at its top


def test_default_is_head_then_everything_with_discriminative_rates():
    recipe = load_recipe()
    assert recipe.name == "fine-tune" and [p.name for p in recipe.phases] == ["head", "fine-tune"]
    assert recipe.phases[0].trainable == "none" and recipe.phases[1].trainable == "all"
    rate = recipe.phases[1].optimizer.learning_rate
    assert rate.low < rate.high <= recipe.phases[0].optimizer.learning_rate
    assert recipe.label_smoothing == 0 and recipe.calibrate and recipe.augment.flip == "none"


def test_every_problem_is_reported_with_its_key_path():
    bad = {"phases": [{"name": "a", "epochs": -1, "optimizer": {"name": "adma", "lerning_rate": 1}}],
           "head": {"dropout": 1.5}, "augmnt": {}}
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict(bad, "my.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "my.yaml: head.dropout: must be < 1.0 (got 1.5)",
        "my.yaml: phases[0].epochs: must be >= 1 (got -1)",
        "my.yaml: phases[0].optimizer.name: must be one of adam, adamw, sgd or rmsprop (got 'adma') "
        "(did you mean: adam, adamw?)",
        "my.yaml: phases[0].optimizer.lerning_rate: unknown key (did you mean: learning_rate?); "
        "allowed: name, learning_rate, weight_decay, momentum",
        "my.yaml: augmnt: unknown key (did you mean: augment?); allowed: name, description, task, backbone, weights, "
        "image_size, batch_size, seed, head, augment, phases, early_stopping, class_weight, label_smoothing, "
        "calibrate, export_weights, cache_features, explain, data, precision, jit_compile, strategy, provenance",
    ]


def test_epoch_overrides_set_scale_or_name_phases():
    recipe = load_recipe("fine-tune-top")
    assert [p.epochs for p in apply_overrides(recipe, epochs="2").phases] == [2, 2]
    assert [p.epochs for p in apply_overrides(recipe, epochs="x0.5").phases] == [10, 5]
    assert [p.epochs for p in apply_overrides(recipe, epochs="fine-tune=4").phases] == [20, 4]
    with pytest.raises(TltoolError, match="no phase 'fine'.*did you mean: fine-tune"):
        apply_overrides(recipe, epochs="fine=3")
    with pytest.raises(TltoolError, match="--epochs"):
        apply_overrides(recipe, epochs="lots")


def test_learning_rate_override_keeps_the_ratio_between_phases():
    recipe = apply_overrides(load_recipe("fine-tune-top"), learning_rate="3e-3")
    rates = [p.optimizer.learning_rate for p in recipe.phases]
    assert rates == pytest.approx([3e-3, 3e-4])
    scaled = apply_overrides(load_recipe("fine-tune"), learning_rate="x2").phases[1].optimizer.learning_rate
    assert (scaled.low, scaled.high) == pytest.approx((2e-5, 6e-4))  # both ends of discriminative rates
    auto = recipe_from_dict({"phases": [{"name": "a", "epochs": 1, "optimizer": {"learning_rate": "auto"}},
                                        {"name": "b", "epochs": 1, "optimizer": {"learning_rate": 1e-4}}]})
    assert [p.optimizer.learning_rate for p in apply_overrides(auto, learning_rate="5e-3").phases] == [5e-3, 1e-4]
    assert [p.optimizer.learning_rate for p in apply_overrides(auto, learning_rate="x2").phases] == ["auto", 2e-4]


def test_learning_rates_read_in_three_forms_with_clear_errors():
    def rate(value):
        return recipe_from_dict({"phases": [{"name": "a", "epochs": 1, "optimizer": {"learning_rate": value}}]},
                                "r.yaml").phases[0].optimizer.learning_rate

    assert rate(0.01) == 0.01 and rate("auto") == "auto" and (rate({"low": 1e-5, "high": 1e-3}).high == 1e-3)
    for value, message in ((-1, "learning_rate: must be > 0.0 (got -1)"),
                           ("fast", "learning_rate: must be a number, auto, or {low: N, high: N} (got 'fast')"),
                           ({"low": 1e-2, "high": 1e-3}, "learning_rate.high: high (0.001) must be at least low (0.01)"),
                           ({"lo": 1e-5, "high": 1e-3}, "learning_rate.lo: unknown key (did you mean: low?)")):
        with pytest.raises(RecipeError, match=re.escape(message)):
            rate(value)


def test_override_values_are_validated_and_named():
    with pytest.raises(TltoolError, match="batch_size: must be >= 1"):
        apply_overrides(load_recipe(), batch_size=0)
