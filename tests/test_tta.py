"""Test-time augmentation: one view changes nothing, more views average, mirrors only where training used them."""

import json
import os

import numpy as np
import pytest

from conftest import run_cli


def test_views_follow_the_runs_flips():
    from tltool.data.tta import views
    from tltool.errors import TltoolError

    assert views(3, "none") == ["plain", "centre 90%", "top-left 90%"]
    assert views(3, "horizontal") == ["plain", "mirror", "centre 90%"]
    assert views(3, "both")[:3] == ["plain", "mirror", "upside-down"]
    with pytest.raises(TltoolError, match="--tta 20: give 1 to 7 views"):
        views(20, "none")


def test_views_are_the_transformations_they_name():
    import tensorflow as tf

    from tltool.data.tta import apply_view

    images = tf.constant(np.arange(2 * 10 * 10 * 3, dtype=np.float32).reshape(2, 10, 10, 3))
    np.testing.assert_array_equal(apply_view(images, "mirror"), images.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(apply_view(images, "upside-down"), images.numpy()[:, ::-1])


@pytest.mark.parametrize("name,top,left,side", [
    ("centre 90%", 0.05, 0.05, 0.9), ("top-left 90%", 0, 0, 0.9), ("top-right 90%", 0, 0.1, 0.9),
    ("bottom-left 90%", 0.1, 0, 0.9), ("bottom-right 90%", 0.1, 0.1, 0.9), ("centre 80%", 0.1, 0.1, 0.8)])
def test_a_crop_view_is_that_part_of_the_image_scaled_to_the_whole(name, top, left, side):
    import tensorflow as tf

    from tltool.data.tta import apply_view

    # A ramp along rows (channel 0) and columns (channel 1): bilinear sampling of it is exact, so each output
    # pixel must hold the position it was sampled from, in the named part of the image.
    n = 11
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    images = tf.constant(np.stack([rows, cols, rows * 0], -1)[None])
    crop = apply_view(images, name).numpy()[0]
    expected = (np.arange(n) * side + np.array([top, left])[:, None] * (n - 1))
    np.testing.assert_allclose(crop[:, 0, 0], expected[0], atol=1e-4)
    np.testing.assert_allclose(crop[0, :, 1], expected[1], atol=1e-4)


def test_one_view_is_the_plain_prediction_and_more_views_average(fitted_run, tiny_data, tmp_path):
    import tltool
    from tltool.serving.loading import load_trained

    folder = os.path.join(tiny_data, "sky")
    plain, _, classes = tltool.predict(fitted_run, [folder], top_k=3, tta=1)
    trained = load_trained(fitted_run)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    stack, kept = trained.view_probabilities(files, views=["plain", "centre 90%", "top-left 90%"])
    one = np.array([[p[c] for c in classes] for p in plain["probabilities"]])
    np.testing.assert_allclose(one, stack[0], atol=1e-6)
    three, _, _ = tltool.predict(fitted_run, [folder], top_k=3, tta=3)
    averaged = np.array([[p[c] for c in classes] for p in three["probabilities"]])
    np.testing.assert_allclose(averaged, stack.mean(axis=0), atol=1e-6)
    assert np.abs(stack[1] - stack[0]).max() > 1e-4  # the views really differ


def test_evaluate_reports_tta_beside_the_plain_figures(fitted_run, tiny_data, tmp_path):
    result = run_cli("evaluate", fitted_run, tiny_data, "--split", "val", "--tta", "4", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    metrics = json.load(open(tmp_path / "e" / "metrics.json"))
    plain = run_cli("evaluate", fitted_run, tiny_data, "--split", "val", "--out", tmp_path / "p")
    assert plain.exit_code == 0
    baseline = json.load(open(tmp_path / "p" / "metrics.json"))
    assert metrics["accuracy"] == baseline["accuracy"] and "tta" not in baseline  # headline: no TTA
    assert metrics["tta"]["views"] == 4 and metrics["tta"]["names"][1] == "centre 90%"  # the run used no flips
    assert "with test-time augmentation (4 views)" in result.output
    assert "test-time augmentation" in (tmp_path / "e" / "report.md").read_text()
    assert run_cli("predict", fitted_run, tiny_data, "--tta", "0").exit_code == 2
