"""Freeze plans: the right layers train in each phase, on a real backbone."""

import numpy as np
import pytest

from tltool.errors import TltoolError
from tltool.models.freeze import apply_plan, batchnorm_layers, resolve_plan
from tltool.models.registry import get_backbone
from tltool.recipe.schema import Fraction, FromLayer, Groups, LastGroups, LastLayers, Pattern


@pytest.fixture(scope="module")
def resnet():
    backbone = get_backbone("resnet50").build(32, "none")
    return backbone, backbone.model


def trainable_weighted(model):
    return [layer.name for layer in model.layers if layer.weights and layer.trainable]


def test_none_freezes_everything(resnet):
    spec, model = resnet
    apply_plan(spec, resolve_plan(spec, "none"))
    assert trainable_weighted(model) == [] and model.trainable_weights == []


def test_all_with_frozen_batchnorm_trains_every_conv_but_no_batchnorm(resnet):
    spec, model = resnet
    apply_plan(spec, resolve_plan(spec, "all", "frozen"))
    assert all(not bn.trainable for bn in batchnorm_layers(model))
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert convs and all(layer.trainable for layer in convs)


def test_last_groups_trains_exactly_those_groups(resnet):
    spec, model = resnet
    plan = resolve_plan(spec, LastGroups(last_groups=1), "train")
    apply_plan(spec, plan)
    names = trainable_weighted(model)
    assert names and all(n.startswith("conv5_") for n in names)
    assert len(names) == sum(1 for layer in model.layers if layer.weights and layer.name.startswith("conv5_"))
    assert [g for g, n, _ in plan.groups if n] == ["stage4"]


def test_named_groups_fraction_layers_and_patterns(resnet):
    spec, model = resnet
    weighted = [layer.name for layer in model.layers if layer.weights]
    cases = {
        "groups": (Groups(groups=["stem", "stage4"]), lambda n: n.startswith(("conv1_", "conv5_"))),
        "last_layers": (LastLayers(last_layers=5), lambda n: n in weighted[-5:]),
        "fraction": (Fraction(fraction=0.25), lambda n: n in weighted[-int(np.ceil(len(weighted) * 0.25)):]),
        "from_layer": (FromLayer(from_layer="conv4_block6_1_conv"),
                       lambda n: weighted.index(n) >= weighted.index("conv4_block6_1_conv")),
        "pattern": (Pattern(pattern=r"_bn$"), lambda n: n.endswith("_bn")),
    }
    for kind, (trainable, expected) in cases.items():
        apply_plan(spec, resolve_plan(spec, trainable, "train"))
        assert trainable_weighted(model) == [n for n in weighted if expected(n)], kind


@pytest.mark.parametrize("trainable, message", [
    (Groups(groups=["stage9"]), "no group 'stage9'.*stage4"),
    (FromLayer(from_layer="conv5_block1_1_cnv"), "did you mean: conv5_block1_1_conv"),
    (Pattern(pattern="^nothing$"), "matches no layer"),
])
def test_names_are_checked_against_the_backbone(resnet, trainable, message):
    spec, model = resnet
    with pytest.raises(TltoolError, match=message):
        resolve_plan(spec, trainable)


@pytest.mark.slow
def test_frozen_batchnorm_keeps_its_statistics_while_neighbours_train():
    import keras

    from tltool.models.classifier import build_classifier
    from tltool.recipe.schema import Augment, Head

    clf = build_classifier(get_backbone("mobilenetv2").build(32, "none"), 2, 32, Head(), Augment(flip="none"))
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    bns = list(batchnorm_layers(clf.backbone.model))

    def moving_means():
        return [keras.ops.convert_to_numpy(bn.moving_mean).copy() for bn in bns]

    for batchnorm, should_change in (("frozen", False), ("train", True)):
        apply_plan(clf.backbone, resolve_plan(clf.backbone, "all", batchnorm, momentum=0.5))
        clf.model.compile("sgd", "categorical_crossentropy")
        before = moving_means()
        clf.model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        changed = any(not np.array_equal(a, b) for a, b in zip(before, moving_means()))
        assert changed == should_change, batchnorm
