"""The phase loop through real fits: cached features after a backbone phase, shipped recipes, splits, exports."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

# One run for two behaviours: features cached again after a phase that trained the backbone, and a phase
# without early stopping running every epoch. No epoch can improve by 100, so the patience of 1 stops `head`
# after 2 epochs; `head2` (early_stopping: false) runs all 3.
PHASES = """
name: phases
augment: {flip: none}
phases:
  - {name: head, epochs: 3, trainable: none}
  - {name: top, epochs: 1, trainable: {last_groups: 1}, optimizer: {name: sgd, learning_rate: 0.02}}
  - {name: head2, epochs: 3, trainable: none, early_stopping: false}
early_stopping: {monitor: val_loss, patience: 1, min_delta: 100.0, restore_best: false}
export_weights: last
calibrate: false
"""


def _fit(data, out, *args, backbone="mobilenet", weights="none"):
    result = run_cli("fit", data, "-b", backbone, "--weights", weights, "--image-size", 32, "--batch-size", 8,
                     "--out", out, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def phased_run(tiny_data, backbone_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("phases")
    recipe = folder / "r.yaml"
    recipe.write_text(PHASES)
    return folder / "run", _fit(tiny_data, folder / "run", "--recipe", recipe, backbone="vgg16", weights=backbone_file)


@pytest.mark.slow
def test_features_are_cached_again_after_a_phase_that_trained_the_backbone(tiny_data, phased_run):
    import tltool
    from tltool.serving.loading import predict_images

    folder, output = phased_run
    assert output.count("cached") >= 3  # decoded images once, features before phase 1 and again before phase 3
    assert len([line for line in output.splitlines() if "features of dim" in line]) == 2
    # Phase 3 trained on the new backbone's features: its final model agrees with its own validation
    # loss, which a head trained on stale features would not.
    run = tltool.open_run(str(folder))
    last = run.history.iloc[-1]
    assert last["phase"] == "head2" and bool(last["exported"])
    index = pd.read_csv(os.path.join(run.dir, "data", "index.csv"))
    val = index[index["split"] == "val"]
    classes = run.classes
    probs, kept = predict_images(run.load_model(), [os.path.join(tiny_data, p) for p in val["path"]], 32,
                                 "stretch", 8)
    labels = [classes.index(c) for c in val["label"]]
    loss = -np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-7)))
    assert loss == pytest.approx(last["val_loss"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["gradual-unfreeze", "full-fine-tune"])
def test_shipped_multi_phase_recipes_fit(recipe, tiny_data, fitted_run, tmp_path):
    from tltool.recipe import load_recipe

    # MobileNet v1: the quickest backbone with BatchNorm to trace, once per phase
    _fit(tiny_data, tmp_path / "run", "--recipe", recipe, "--epochs", 1, "--split-from", fitted_run)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["phase"].tolist() == [p.name for p in load_recipe(recipe).phases]
    mine = pd.read_csv(tmp_path / "run" / "data" / "index.csv")
    theirs = pd.read_csv(os.path.join(fitted_run, "data", "index.csv"))
    pd.testing.assert_frame_equal(mine, theirs)  # --split-from: the very same split


def test_export_savedmodel_loads_and_predicts_like_the_keras_model(fitted_run, tiny_data, tmp_path):
    import tensorflow as tf

    import tltool

    out = tmp_path / "sm"
    result = run_cli("export", fitted_run, "--format", "savedmodel", "--out", out)
    assert result.exit_code == 0, result.output
    loaded = tf.saved_model.load(str(out))
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).round().astype(np.float32)
    served = loaded.serve(tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(served, tltool.load_model(fitted_run)(pixels).numpy(), atol=1e-5)




@pytest.mark.slow
def test_class_weights_raise_the_minority_recall(tmp_path, backbone_file):
    """Same data and seed, only class_weight differs: the rare class is found more often with `auto`.

    Each image's colour is its class's plus noise, so the classes overlap and
    the decision boundary depends on how much each class weighs. The head
    trains on cached features of a fixed backbone, where the weights act.
    """
    import tltool

    from conftest import write_image

    rng = np.random.default_rng(0)
    centres = {"rare": np.array([130, 115, 100]), "common": np.array([115, 130, 100])}
    for name, count in (("rare", 6), ("common", 48)):
        for i in range(count):
            colour = tuple(int(c) for c in np.clip(centres[name] + rng.normal(0, 12, 3), 0, 255))
            write_image(str(tmp_path / "data" / name / f"{i}.png"), colour, seed=i)
    recalls = {}
    for weighting in ("none", "auto"):
        recipe = tmp_path / f"{weighting}.yaml"
        recipe.write_text(f"name: {weighting}\naugment: {{flip: none}}\nhead: {{dropout: 0.0}}\n"
                          "phases:\n  - {name: head, epochs: 40, trainable: none, "
                          "optimizer: {name: adam, learning_rate: 0.003}}\n"
                          f"early_stopping: null\nclass_weight: {weighting}\nexport_weights: last\ncalibrate: false\n")
        result = run_cli("fit", tmp_path / "data", "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                         "--batch-size", 8,
                         "--recipe", recipe, "--val-split", "0.2", "--out", tmp_path / weighting)
        assert result.exit_code == 0, result.output
        _, evaluation = tltool.evaluate(str(tmp_path / weighting), str(tmp_path / "data"), split="train",
                                        out=str(tmp_path / f"e{weighting}"))
        recalls[weighting] = evaluation.per_class.set_index("class").loc["rare", "recall"]
    print("recalls", recalls)
    assert recalls["auto"] > recalls["none"], recalls


@pytest.mark.slow
def test_a_phase_without_early_stopping_runs_every_epoch(phased_run):
    import tltool

    folder, output = phased_run
    history = tltool.open_run(str(folder)).history
    assert history["phase"].value_counts().to_dict() == {"head": 2, "top": 1, "head2": 3}
    assert output.count("early stopping:") == 1
