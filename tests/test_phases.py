"""The phase loop through real fits: cached features after a backbone phase, shipped recipes, splits, exports."""

import os

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

FROZEN_AGAIN = """
name: frozen-again
augment: {flip: none}
phases:
  - {name: head, epochs: 1, trainable: none}
  - {name: all, epochs: 1, trainable: all, batchnorm: train, optimizer: {name: sgd, learning_rate: 0.02}}
  - {name: head2, epochs: 1, trainable: none}
early_stopping: null
export_weights: last
"""


def _fit(data, out, *args):
    result = run_cli("fit", data, "-b", "mobilenetv2", "--weights", "none", "--image-size", 32, "--batch-size", 8,
                     "--out", out, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_features_are_cached_again_after_a_phase_that_trained_the_backbone(tiny_data, tmp_path):
    import tltool
    from tltool.inference import predict_images

    recipe = tmp_path / "r.yaml"
    recipe.write_text(FROZEN_AGAIN)
    output = _fit(tiny_data, tmp_path / "run", "--recipe", recipe)
    assert output.count("cached") >= 3  # decoded images once, features before phase 1 and again before phase 3
    assert len([line for line in output.splitlines() if "features of dim" in line]) == 2
    # Phase 3 trained on the new backbone's features: its final model agrees with its own validation
    # loss, which a head trained on stale features would not.
    run = tltool.open_run(str(tmp_path / "run"))
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

