"""Calibration: a temperature fitted on validation, stored in the model, reported."""

import json
import os

import numpy as np
import pytest


def test_the_fitted_temperature_undoes_a_known_one():
    from tltool.training.calibration import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2000, 5))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in true])
    overconfident = apply_temperature(true, 1 / 3)  # a model 3x too sure of itself
    assert abs(fit_temperature(overconfident, labels) - 3.0) < 0.3
    assert abs(fit_temperature(true, labels) - 1.0) < 0.1
    np.testing.assert_array_equal(apply_temperature(overconfident, 3.0).argmax(1), true.argmax(1))
    perfect = np.eye(5)[labels] * 0.6 + 0.1  # right every time, and only 60% sure: NLL falls as T goes to 0
    assert fit_temperature(perfect, labels) == pytest.approx(1.0, abs=1e-3)
    nearly_uniform = np.exp(rng.normal(0, 1e-6, (6, 3)))  # an untrained head, as on random weights
    nearly_uniform /= nearly_uniform.sum(axis=1, keepdims=True)
    assert fit_temperature(nearly_uniform, np.arange(6) % 3) == 1.0  # no T does measurably better: no change


def test_the_layer_computes_what_numpy_does():
    from tltool.models.layers import Temperature
    from tltool.training.calibration import apply_temperature

    probs = np.array([[0.7, 0.2, 0.1], [0.01, 0.98, 0.01]], "float32")
    np.testing.assert_allclose(np.asarray(Temperature(2.0)(probs)), apply_temperature(probs, 2.0), atol=1e-6)


def test_a_run_stores_its_temperature_in_the_served_model(fitted_run, tiny_data, tmp_path):
    import tensorflow as tf

    import tltool
    from tltool.training.calibration import apply_temperature, negative_log_likelihood

    calibration = json.load(open(os.path.join(fitted_run, "metrics.json")))["calibration"]
    model = tltool.load_model(fitted_run)
    temperature = calibration["temperature"]
    assert model.get_layer("temperature").temperature == temperature
    # The recorded losses are those of the model's own validation probabilities, without and with the
    # temperature, and no nearby temperature does better on them.
    _, val = tltool.evaluate(fitted_run, tiny_data, split="val", out=str(tmp_path / "val"))
    raw = apply_temperature(val.probs, 1 / temperature)
    assert calibration["fitted_on"] == "val" and calibration["images"] == len(val.y_true)
    assert negative_log_likelihood(raw, val.y_true) == pytest.approx(calibration["val_log_loss_before"], abs=2e-4)
    assert negative_log_likelihood(val.probs, val.y_true) == pytest.approx(calibration["val_log_loss_after"], abs=2e-4)
    for other in (temperature * 1.2, temperature / 1.2):
        if 1.0 <= other <= 20.0 or not (val.probs.argmax(1) == val.y_true).all():
            assert negative_log_likelihood(apply_temperature(raw, other), val.y_true) >= \
                calibration["val_log_loss_after"] - 1e-6
    served = tf.saved_model.load(os.path.join(fitted_run, "saved_model"))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).round().astype("float32")
    np.testing.assert_allclose(served.serve(tf.constant(pixels))["probabilities"].numpy(), model(pixels), atol=1e-5)
    assert "calibration" in open(os.path.join(fitted_run, "report.md")).read()
