"""`tltool fit` end to end on a tiny dataset, and its bad-input errors through the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from conftest import make_dataset, run_cli

RUN_FILES = ["recipe.yaml", "classes.json", "class_weights.json", "history.csv", "data/index.csv",
             "data/skipped.csv", "checkpoints/state.json", "model.keras",
             "saved_model/saved_model.pb", "saved_model/assets/classes.json", "metrics.json", "per_class.csv",
             "confusion_matrix.csv"]


def test_fit_writes_the_whole_run_directory(fitted_run, tiny_data):
    missing = [f for f in RUN_FILES if not os.path.exists(os.path.join(fitted_run, f))]
    assert missing == []
    classes = json.load(open(os.path.join(fitted_run, "classes.json")))
    assert classes == {"0": "apple", "1": "leaf", "2": "sky"}
    index = pd.read_csv(os.path.join(fitted_run, "data", "index.csv"))
    assert len(index) == 24 and set(index["split"]) == {"train", "val"}
    assert index.groupby("label")["split"].apply(lambda s: (s == "val").sum()).tolist() == [2, 2, 2]
    history = pd.read_csv(os.path.join(fitted_run, "history.csv"))
    assert history["phase"].tolist()[-2:] == ["head", "fine-tune"] and len(history) <= 21  # early stopping may cut
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history.columns)
    per_class = pd.read_csv(os.path.join(fitted_run, "per_class.csv"))
    assert per_class.columns.tolist()[:5] == ["class", "precision", "recall", "f1", "support"]
    assert per_class["support"].sum() == 6
    metrics = json.load(open(os.path.join(fitted_run, "metrics.json")))
    predictions = pd.read_csv(os.path.join(fitted_run, "predictions.csv"))
    assert metrics["accuracy"] == pytest.approx(predictions["correct"].mean())
    assert metrics["macro_recall"] == pytest.approx(per_class["recall"].mean())
    confusion = pd.read_csv(os.path.join(fitted_run, "confusion_matrix.csv"), index_col=0)
    assert confusion.values.sum() == 6 and list(confusion.columns) == ["apple", "leaf", "sky"]
    # Three flat colours are an easy task: the model must have learned it (chance is 1/3, log loss ln 3 = 1.10).
    assert metrics["accuracy"] >= 5 / 6 and metrics["log_loss"] < 0.9
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0] - 0.2


def test_resolved_recipe_records_what_was_run(fitted_run, tiny_data, backbone_file):
    import yaml

    recipe = yaml.safe_load(open(os.path.join(fitted_run, "recipe.yaml")))
    assert recipe["backbone"] == "vgg16" and recipe["image_size"] == 32 and recipe["weights"] == backbone_file
    assert [p["epochs"] for p in recipe["phases"]] == [20, 1]
    assert recipe["provenance"]["dataset"] == os.path.abspath(tiny_data)
    assert {"tensorflow", "keras", "tltool"} <= set(recipe["provenance"]["versions"])


@pytest.mark.slow
def test_saved_model_predicts_like_the_keras_model_in_a_fresh_process(fitted_run, tmp_path):
    import keras

    import tltool.models.layers  # noqa: F401  (registers the preprocessing layer)

    model = keras.models.load_model(os.path.join(fitted_run, "model.keras"))
    # Whole values: the served model rounds float pixels to 8 bits, as the input contract says.
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).round().astype("float32")
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({os.path.join(fitted_run, 'saved_model')!r})
        x = np.load({str(tmp_path / 'images.npy')!r})
        out = m.signatures["serving_default"](images=tf.constant(x))
        u8 = m.serve_uint8(tf.constant(np.round(x).astype(np.uint8)))
        png = tf.io.encode_png(tf.constant(np.round(x[0]).astype(np.uint8))).numpy()
        raw = m.serve_bytes(tf.constant([png, png]))
        np.save({str(tmp_path / 'probs.npy')!r}, out["probabilities"].numpy())
        np.save({str(tmp_path / 'bytes.npy')!r}, raw["probabilities"].numpy())
        print(list(out["class_name"].numpy()), u8["probabilities"].shape, list(raw["class_name"].numpy()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "bytes.npy"), expected[[0, 0]], atol=1e-3)  # PNG rounds pixels
    assert "(4, 3)" in done.stdout


def test_weights_file_is_loaded_into_the_backbone(tmp_path):
    import keras

    from tltool.models.registry import get_backbone
    spec = get_backbone("mobilenetv2")
    source = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = str(tmp_path / "mine.weights.h5")
    source.save_weights(path)
    loaded = spec.build(32, path).model
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_fit_from_a_weights_file_keeps_frozen_batchnorm_statistics(tiny_data, tmp_path):
    """Training block_16 and Conv_1 with batchnorm: frozen changes their
    convolutions and leaves every BatchNorm statistic as loaded."""
    import keras

    import tltool.models.layers  # noqa: F401

    source = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = str(tmp_path / "bb.weights.h5")
    source.save_weights(path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "phases:\n"
        "  - {name: head, epochs: 1, trainable: none}\n"
        "  - {name: fine-tune, epochs: 1, trainable: {last_groups: 2}, batchnorm: frozen,\n"
        "     optimizer: {learning_rate: 1.0e-3}}\n"
        "early_stopping: null\n")
    result = run_cli("fit", tiny_data, "-b", "mobilenetv2", "--weights", path, "--image-size", 32, "--recipe", recipe,
                     "--no-cache-features", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    trained = keras.models.load_model(str(tmp_path / "run" / "model.keras")).get_layer("backbone")
    for name in ("bn_Conv1", "block_16_project_BN", "Conv_1_bn"):
        before, after = source.get_layer(name), trained.get_layer(name)
        for attr in ("moving_mean", "moving_variance", "gamma", "beta"):
            np.testing.assert_array_equal(np.asarray(getattr(before, attr)), np.asarray(getattr(after, attr)))
    assert not np.array_equal(np.asarray(source.get_layer("Conv_1").kernel), np.asarray(trained.get_layer("Conv_1").kernel))
    np.testing.assert_array_equal(np.asarray(source.get_layer("Conv1").kernel), np.asarray(trained.get_layer("Conv1").kernel))


def test_existing_run_directory_is_not_overwritten(fitted_run, tiny_data):
    before = os.path.getmtime(os.path.join(fitted_run, "model.keras"))
    result = run_cli("fit", tiny_data, "--weights", "none", "--out", fitted_run)
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert os.path.getmtime(os.path.join(fitted_run, "model.keras")) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_data, tmp_path):
    precious = tmp_path / "precious"
    (precious / "data").mkdir(parents=True)
    (precious / "thesis.txt").write_text("do not delete")
    (precious / "recipe.yaml").write_text("my own notes\n")  # a recipe.yaml alone does not make a run
    (precious / "data" / "survey.csv").write_text("a,b\n")
    result = run_cli("fit", tiny_data, "--weights", "none", "--out", precious, "--overwrite")
    assert result.exit_code == 2 and "not a tltool run directory" in result.output
    assert (precious / "thesis.txt").read_text() == "do not delete"
    assert (precious / "recipe.yaml").read_text() == "my own notes\n"
    assert (precious / "data" / "survey.csv").exists()


def test_a_bad_freeze_plan_fails_before_the_run_folder_exists(tiny_data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nphases:\n  - {name: a, epochs: 1, trainable: {from_layer: no_such_layer}}\n")
    result = run_cli("fit", tiny_data, "-b", "mobilenetv2", "--weights", "none", "--image-size", 32,
                     "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "no_such_layer" in result.output
    assert not (tmp_path / "run").exists()


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_missing_folder(tmp_path):
    _one_line_error(run_cli("fit", tmp_path / "nope", "--weights", "none"), "no such folder")


def test_fewer_than_two_classes(tmp_path):
    data = make_dataset(tmp_path / "one", classes={"only": (10, 10, 10)})
    _one_line_error(run_cli("fit", data, "--weights", "none", "--out", tmp_path / "r"), "at least 2")


def test_empty_class(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=4)
    os.makedirs(os.path.join(data, "empty"))
    _one_line_error(run_cli("fit", data, "--weights", "none", "--out", tmp_path / "r"), "'empty'",
                    "no usable training images")
    assert not os.path.exists(tmp_path / "r")


def test_unknown_backbone_suggests(tiny_data):
    _one_line_error(run_cli("fit", tiny_data, "--backbone", "resnet5"), "unknown backbone", "resnet50")


def test_image_size_below_minimum(tiny_data):
    _one_line_error(run_cli("fit", tiny_data, "-b", "inceptionv3", "--image-size", 32), "minimum of 75")


def test_bad_weights_path(tiny_data, tmp_path):
    _one_line_error(run_cli("fit", tiny_data, "--weights", tmp_path / "missing.h5"), "no such file")


@pytest.mark.slow
def test_offline_imagenet_weights_give_one_clear_message(tiny_data, tmp_path):
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "KERAS_HOME": str(tmp_path / "keras")}
    done = subprocess.run([sys.executable, "-m", "tltool", "fit", tiny_data, "-b", "mobilenetv2",
                           "--image-size", "96", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 3, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    message = errors[0]
    assert "mobilenetv2" in message and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert str(tmp_path / "keras" / "models") in message
    assert "--weights PATH" in message and "--weights none" in message
    assert not os.path.exists(tmp_path / "r")  # a failed start leaves no half-made run folder


# A corrupt image in a dataset is skipped and listed: tests/test_messy_data.py, on one fit with every kind of bad file.
