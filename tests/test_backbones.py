"""The registry: every backbone builds, its facts are right, its groups cover it in order."""

import re
import subprocess
import sys

import numpy as np
import pytest

from tltool.errors import TltoolError
from tltool.models.applications import SPECS as REGISTRY
from tltool.models.applications import resolve_groups
from tltool.models.registry import get_backbone


def _smallest_of_each_family() -> set[str]:
    """The fast tier builds the smallest backbone of each family (one preprocessing module); the larger
    variants, the same code at more depth or width, are built by the whole suite."""
    families = {}
    for name, spec in REGISTRY.items():
        families.setdefault(spec.preprocess_module, []).append(name)
    return {min(names, key=lambda n: REGISTRY[n].params) for names in families.values()}


QUICK = _smallest_of_each_family()


def test_registry_covers_the_backbones_the_issue_names():
    required = ["vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2",
                "resnet152v2", "mobilenet", "mobilenetv2", "mobilenetv3small", "mobilenetv3large",
                *[f"efficientnetb{i}" for i in range(8)], *[f"efficientnetv2{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")],
                "inceptionv3", "xception", "densenet121", "densenet169", "densenet201",
                "convnexttiny", "convnextsmall", "convnextbase"]
    assert [n for n in required if n not in REGISTRY] == []


@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in REGISTRY])
def test_backbone_builds_and_its_groups_cover_every_layer_in_order(name):
    import keras

    spec = REGISTRY[name]
    model = getattr(keras.applications, spec.constructor)(
        weights=None, include_top=False, input_shape=(spec.min_size, spec.min_size, 3), **spec.kwargs)
    try:
        assert model.count_params() == spec.params
        names = [layer.name for layer in model.layers]
        groups = resolve_groups(spec, names)
        assert tuple(g for g, _, _ in groups) == spec.group_names
        assert groups[0][1] == 0 and groups[-1][2] == len(names)
        for (_, _, end), (_, start, _) in zip(groups, groups[1:]):
            assert end == start  # contiguous, in order
        for group, start, end in groups:
            weighted = [layer for layer in model.layers[start:end] if layer.weights]
            assert weighted, f"group {group} of {name} has no weights"
        preprocess = getattr(keras.applications, spec.preprocess_module).preprocess_input
        grey = np.repeat(np.array([0.0, 64.0, 128.0, 255.0])[:, None, None, None], 3, axis=-1)  # (4, 1, 1, 3)
        out = np.asarray(preprocess(grey.copy())).reshape(4, 3)
        assert np.isfinite(out).all() and (np.diff(out, axis=0) > 0).all()  # brighter stays brighter
        check_gradcam(spec, model, spec.min_size)
    finally:
        keras.backend.clear_session()


def check_gradcam(spec, network, size: int, images: int = 1):
    """Grad-CAM of a classifier on `network` (laid out as tltool's: preprocess, backbone, pool, predictions): one
    map per image on its feature map's grid, values in 0-1, a peak inside the image, and the probabilities the
    classifier itself gives."""
    import keras

    from tltool.evaluation.gradcam import gradcam_for, peak, to_image

    network.name = "backbone"
    image = keras.Input((size, size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(network(keras.layers.Identity(name="preprocess")(image)))
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax", name="predictions")(pooled))
    pixels = np.random.default_rng(0).uniform(0, 255, (images, size, size, 3)).astype("float32")
    heatmaps, probs = gradcam_for(model, spec)(pixels, [-1] * images)
    grid = tuple(spec.explained_map(network).grid(network.output).shape[1:3])
    assert heatmaps.shape == (images, *grid) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    np.testing.assert_allclose(probs, np.asarray(model(pixels)), atol=1e-5)
    for heatmap in heatmaps:
        where = peak(to_image(heatmap, size, size, "stretch"))
        assert where is None or all(0 < v < 1 for v in where)


def test_lookup_accepts_keras_class_names_and_dashes():
    assert get_backbone("ResNet50").name == "resnet50"
    assert get_backbone("efficientnet-b0").name == "efficientnetb0"


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(TltoolError, match=r"did you mean: resnet50"):
        get_backbone("resnet5O")


def test_group_markers_that_match_nothing_are_reported():
    spec = REGISTRY["resnet50"]
    with pytest.raises(ValueError, match="stage1"):
        resolve_groups(spec, ["input", "conv1_conv", "something_else"])


@pytest.mark.slow
def test_backbones_command_lists_every_entry_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from tltool.cli import cli; "
            "r = CliRunner().invoke(cli, ['backbones']); print(r.output); "
            "print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-ABSENT')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TF-ABSENT" in out
    from tltool.models.hub import SPECS as HUB

    for name in [*REGISTRY, *HUB]:
        assert re.search(rf"^{name}\s", out, re.M), name
    assert "stem stage1 stage2 stage3 stage4" in out
    assert re.search(r"^vit_base_patch16_224_imagenet\s+keras-hub\s+vit\s+224\s+no\s+85\.8M\s+stem block_1", out, re.M)
    assert re.search(r"^dinov2_small\s+keras-hub\s+dinov2\s+224\s+yes\s", out, re.M)


def test_a_built_backbone_gives_its_groups_spatial_map_and_pooled_features():
    import keras

    backbone = get_backbone("mobilenetv2").build(32, "none")
    assert [g.name for g in backbone.groups] == list(backbone.spec.group_names)
    units = backbone.units
    assert len(units) == len(backbone.model.layers) and units[0][0] == "stem" and units[-1][0] == "Conv_1"
    image = keras.Input((32, 32, 3))
    features = backbone.model(backbone.preprocess(image))
    assert backbone.spatial(features).shape[1:] == (1, 1, 1280)  # (N, h, w, C) for explanations
    pooled = backbone.pooling("avg")(features)
    assert pooled.shape[1:] == (1280,) and backbone.pooling("avg") is backbone.pooling("avg")  # made once, shared
