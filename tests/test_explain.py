"""`tltool explain`: Grad-CAM heatmaps of a trained model, mapped back onto the images, and in the reports."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tltool.errors import TltoolError

from conftest import SHAPES, run_cli

COLUMNS = ["path", "class", "probability", "peak_x", "peak_y", "overlay"]


@pytest.mark.slow
def test_explain_writes_a_row_and_an_overlay_per_image_named_after_its_path(fitted_run, tiny_data, tmp_path):
    photos = tmp_path / "photos"
    for sub in ("a", "b"):  # the same file name twice, below different folders
        os.makedirs(photos / sub)
        shutil.copy(os.path.join(tiny_data, "sky", "sky_0.png"), photos / sub / "x.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    single = os.path.join(tiny_data, "leaf", "leaf_0.png")
    out = tmp_path / "explained"
    result = run_cli("explain", fitted_run, photos, single, "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.png" in result.output
    table = pd.read_csv(out / "explanations.csv")
    assert list(table.columns) == COLUMNS
    assert sorted(table["overlay"]) == ["a__x.png", "b__x.png", "leaf_0.png"]
    for name in table["overlay"]:
        with Image.open(out / name) as overlay:
            assert overlay.format == "PNG" and overlay.width == 256  # a 32 px image, brought up to 256
    rows, _, _ = __import__("tltool").predict(fitted_run, [str(photos), single], progress=False)
    predicted = dict(zip(rows["path"], zip(rows["predicted"], rows["confidence"])))
    for _, row in table.iterrows():  # the predicted class, with its probability, path as predict writes it
        assert predicted[row["path"]][0] == row["class"]
        assert abs(predicted[row["path"]][1] - row["probability"]) < 1e-5
    # (VGG16 at 32 px has a 1 x 1 map, so its peak says nothing: test_explain_finds_the_spot... checks peaks.)

    again = run_cli("explain", fitted_run, single, "--out", out)
    assert again.exit_code != 0 and "pass --overwrite" in again.output
    chosen = run_cli("explain", fitted_run, single, photos, "--out", out, "--overwrite", "--class", "apple")
    assert chosen.exit_code == 0, chosen.output
    assert set(pd.read_csv(out / "explanations.csv")["class"]) == {"apple"}
    unknown = run_cli("explain", fitted_run, single, "--out", tmp_path / "other", "--class", "appel")
    assert unknown.exit_code != 0 and "did you mean: apple" in unknown.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = run_cli("explain", fitted_run, single, "--out", mine, "--overwrite")
    assert refused.exit_code != 0 and "never replaced" in refused.output and (mine / "notes.txt").exists()


@pytest.mark.slow
def test_a_new_savedmodel_explains_as_its_model_does_and_other_files_are_refused(fitted_run, tiny_data, tmp_path):
    import keras

    from tltool.serving.formats import export_saved_model, read_info
    from tltool.serving.loading import load_trained
    from tltool.tasks import get_task
    from tltool.workflows.explaining import explain

    sky = os.path.join(tiny_data, "sky")
    from_keras = explain(fitted_run, [sky], out=str(tmp_path / "k"), progress=False).rows
    from_saved = explain(os.path.join(fitted_run, "saved_model"), [sky], out=str(tmp_path / "s"), progress=False).rows
    pd.testing.assert_frame_equal(from_keras.drop(columns="probability"), from_saved.drop(columns="probability"))
    np.testing.assert_allclose(from_keras["probability"], from_saved["probability"], atol=1e-5)

    model = keras.models.load_model(os.path.join(fitted_run, "model.keras"), compile=False)
    old = str(tmp_path / "old_saved_model")
    export_saved_model(model, old, read_info(os.path.join(fitted_run, "saved_model")), get_task())  # no gradcam
    with pytest.raises(TltoolError, match="this SavedModel has no gradcam signature .* export it again"):
        explain(old, [sky], out=str(tmp_path / "o"))
    trained = load_trained(fitted_run)
    trained.kind, trained.source = "litert", "model.tflite"
    from tltool.evaluation.gradcam import explainer_of

    with pytest.raises(TltoolError, match="model.tflite: a litert file runs the model without its gradients"):
        explainer_of(trained)


def spot_model(size=32):
    """A classifier whose map is known: its 'backbone' averages 4 x 4 pixels (an 8 x 8 map at 32 px) and class 0
    reads the red channel, so Grad-CAM of class 0 is the red channel, pooled."""
    import keras

    image = keras.Input((size, size, 3), name="image")
    inner = keras.Input((size, size, 3))
    network = keras.Model(inner, keras.layers.AveragePooling2D(4)(inner), name="backbone")
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(keras.layers.GlobalAveragePooling2D(name="pool")(network(keras.layers.Identity(
        name="preprocess")(image))))
    dense.set_weights([np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), np.zeros(2)])
    return keras.Model(image, outputs)


@pytest.mark.parametrize("aspect, spot", [("stretch", (84, 6)), ("crop", (54, 30)), ("pad", (12, 36))])
def test_the_heatmap_is_mapped_back_through_the_aspect_policy_onto_a_non_square_image(aspect, spot, tmp_path):
    from tltool.data.contract import prepare_file
    from tltool.evaluation.gradcam import GradCam, Refined, peak, to_image
    from tltool.models.backbone import ExplainedMap

    width, height, side = 96, 48, 12  # the spot: a red square of 12 px, its top-left corner at `spot`
    pixels = np.full((height, width, 3), 40, np.uint8)
    x, y = spot
    pixels[y:y + side, x:x + side] = (250, 40, 40)
    path = str(tmp_path / "wide.png")
    Image.fromarray(pixels).save(path)
    cam = GradCam(spot_model(), ExplainedMap())
    pixels = prepare_file(path, 32, aspect)[None].astype("float32")
    seen = {"stretch": (width, height), "crop": (height, height), "pad": (width, width)}[aspect]
    cell = (seen[0] / 8 / width, seen[1] / 8 / height)  # one cell of the map, as fractions of the image
    for explainer in (cam, Refined(cam, 32)):  # the map alone (8 x 8), and with its shifted views (32 x 32)
        on_image = to_image(explainer(pixels, [0])[0][0], height, width, aspect)
        assert on_image.shape == (height, width)
        peak_x, peak_y = peak(on_image)
        assert abs(peak_x - (x + side / 2) / width) <= cell[0] / 2
        assert abs(peak_y - (y + side / 2) / height) <= cell[1] / 2
    if aspect == "crop":  # what the model never saw has no heat
        assert not on_image[:, :(width - height) // 2].any() and not on_image[:, (width + height) // 2:].any()


def test_explain_finds_the_spot_on_a_map_with_a_real_grid(tmp_path):
    import json

    model = tmp_path / "model.keras"
    spot_model().save(str(model))
    info = {"classes": ["red", "other"], "image_size": 32, "aspect": "stretch", "backbone": "vgg16",
            "task": "single-label"}
    (tmp_path / "model.keras.json").write_text(json.dumps(info))  # as `tltool export --format keras` writes it
    pixels = np.full((64, 64, 3), 40, np.uint8)
    pixels[8:24, 36:52] = (250, 40, 40)  # a red square, its centre at (44, 16) of 64 x 64
    Image.fromarray(pixels).save(tmp_path / "spot.png")
    result = run_cli("explain", model, tmp_path / "spot.png", "--class", "red", "--out", tmp_path / "why")
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "why" / "explanations.csv").iloc[0]
    assert abs(row["peak_x"] - 44 / 64) <= 1 / 16 and abs(row["peak_y"] - 16 / 64) <= 1 / 16  # within half a cell


def shapes_images(n=12, size=128, seed=0):
    """Grey canvases, each with one coloured square of conftest's SHAPES colours at a random place; its class."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        canvas = np.clip(rng.normal(128, 12, (size, size, 3)), 0, 255)
        x, y = (int(v) for v in rng.integers(0, size - 32, 2))
        canvas[y:y + 32, x:x + 32] = list(SHAPES.values())[i % 3]
        images.append(canvas)
        labels.append(i % 3)
    return np.asarray(images, np.float32), np.asarray(labels)


@pytest.mark.slow
def test_the_map_changes_when_the_head_is_randomised(backbone_file):
    """Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): a map that stays the same when the
    model's weights are randomised explains the image, not the model. An explainer that ignored the class
    weights (the map of the activations alone) would give a rank correlation of 1; two unrelated maps of
    16 cells give 0 +- 0.26, so the mean over 4 to 12 images lies within 0 +- 0.13. The bound, 0.5, leaves
    the two far apart."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression

    from tltool.evaluation.gradcam import gradcam_for
    from tltool.models.classifier import build_classifier
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head

    spec = get_backbone("vgg16")
    clf = build_classifier(spec.build(128, backbone_file), 3, 128, Head(dropout=0.0), Augment())
    images, labels = shapes_images()
    probe = LogisticRegression(C=1e6, max_iter=5000).fit(np.asarray(clf.features(images)), labels)  # a trained head
    dense = clf.inference.get_layer("predictions")
    dense.set_weights([probe.coef_.T.astype("float32"), probe.intercept_.astype("float32")])
    cam = gradcam_for(clf.inference, spec)
    trained, probs = cam(images, [-1] * len(images))
    assert (probs.argmax(axis=1) == labels).mean() > 0.9  # the probe learnt the colours
    rng = np.random.default_rng(1)
    kernel = dense.get_weights()[0]
    dense.set_weights([rng.normal(0, kernel.std(), kernel.shape).astype("float32"), np.zeros(3, "float32")])
    randomised, _ = cam(images, probs.argmax(axis=1))  # the same classes, explained by the random head
    # Grad-CAM's ReLU zeroes the map of a class told by the absence of the others' evidence (here the
    # green square's, a third of the images): those have no ranks to compare.
    both = [(a, b) for a, b in zip(trained, randomised) if np.ptp(a) > 0 and np.ptp(b) > 0]
    assert len(both) >= 4
    correlations = [spearmanr(a.ravel(), b.ravel())[0] for a, b in both]
    assert np.mean(correlations) < 0.5, correlations


@pytest.mark.slow
def test_the_gallery_of_mistakes_shows_each_image_beside_its_heatmap_unless_told_not_to(fitted_run, tiny_data,
                                                                                        tmp_path):
    swapped = tmp_path / "swapped"  # apple's images called sky, and sky's apple: every one a mistake
    shutil.copytree(os.path.join(tiny_data, "apple"), swapped / "sky")
    shutil.copytree(os.path.join(tiny_data, "sky"), swapped / "apple")
    widths = {}
    for flag in ("--explain", "--no-explain"):
        result = run_cli("evaluate", fitted_run, swapped, "--out", tmp_path / flag, flag)
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / flag / "misclassified.png") as picture:
            widths[flag] = picture.width
    assert widths == {"--explain": 2160, "--no-explain": 1200}  # 4 columns of image + heatmap, or of the image
