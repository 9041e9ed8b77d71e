"""The `keras.applications` backbone source: one table entry per pretrained ImageNet CNN.

Everything here is static data, so `tltool backbones` and recipe validation
answer without importing TensorFlow. An entry names the `keras.applications`
constructor, the module whose `preprocess_input` the backbone expects, its
default and minimum input sizes, its parameter count (include_top=False; a test
checks it against the built model) and its freeze groups.

Freeze groups are the backbone's natural blocks, ordered from input to output
(ResNet `stem, stage1..stage4`, VGG `block1..block5`, ...). A group is given by
a marker for its first layer, resolved against the model's layer list (which
Keras keeps in topological order):

- a regex: the group starts at the first later layer whose name matches it;
- ``"after:REGEX"``: the group starts right after the first layer matching it
  (for InceptionV3 / InceptionResNetV2, whose blocks end in a named
  Concatenate but begin with auto-numbered layers);
- an int: the group starts at that layer index (only for the two Inception
  stems, which Keras leaves unnamed).

The first group always starts at layer 0 and the last one runs to the end, so
the groups cover every layer exactly once.

NASNetMobile/NASNetLarge are left out: their cells take the two previous cells
as inputs, so layers of neighbouring cells interleave and no contiguous group
boundaries exist.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from tltool.errors import UnavailableError
from tltool.models.backbone import Backbone, BackboneSpec, FreezeGroup
from tltool.models.weights import (
    check_image_size,
    is_network_error,
    keras_models_dir,
    load_weights_file,
    weights_source,
)

SOURCE = "keras.applications"


@dataclass(frozen=True)
class Group:
    name: str
    start: str | int | None


@dataclass(frozen=True, kw_only=True)
class ApplicationsSpec(BackboneSpec):
    """A `keras.applications` backbone.

    Attributes:
        constructor: attribute of ``keras.applications``.
        preprocess_module: module of ``keras.applications`` whose
            ``preprocess_input`` maps 0-255 RGB to what the backbone expects.
        groups: freeze groups, input to output, as markers (see above).
    """

    constructor: str
    preprocess_module: str
    groups: tuple[Group, ...]
    kwargs: dict = field(default_factory=dict)

    def build(self, image_size: int, weights: str = "imagenet") -> Backbone:
        from tltool.models.layers import BackbonePreprocess

        model = build_model(self, image_size, weights)
        spans = resolve_groups(self, [layer.name for layer in model.layers])
        groups = [FreezeGroup(name, model.layers[start:end]) for name, start, end in spans]
        return Backbone(self, model, BackbonePreprocess(self.preprocess_module, name="preprocess"), groups)


def _groups(*pairs) -> tuple[Group, ...]:
    return tuple(Group(name, start) for name, start in pairs)


def _numbered(prefix: str, count: int, marker: str, first: int = 1):
    """Groups prefix{first}..prefix{first+count-1} whose marker has {n} in it."""
    return [(f"{prefix}{n}", marker.format(n=n)) for n in range(first, first + count)]


VGG16_GROUPS = _groups(*_numbered("block", 5, r"block{n}_.*"))
RESNET_GROUPS = _groups(
    ("stem", None), ("stage1", r"conv2_.*"), ("stage2", r"conv3_.*"),
    ("stage3", r"conv4_.*"), ("stage4", r"conv5_.*"),
)
DENSENET_GROUPS = _groups(
    ("stem", None), ("block1", r"conv2_.*"), ("block2", r"conv3_.*"),
    ("block3", r"conv4_.*"), ("block4", r"conv5_.*"),
)
MOBILENET_GROUPS = _groups(("stem", None), *_numbered("block", 13, r"conv_(pad|dw)_{n}(_.*)?"))
MOBILENETV2_GROUPS = _groups(
    ("stem", None), *_numbered("block_", 16, r"block_{n}_.*"), ("Conv_1", r"Conv_1"),
)
XCEPTION_GROUPS = _groups(("block1", None), *_numbered("block", 13, r"block{n}_.*", first=2))
CONVNEXT_GROUPS = _groups(
    ("stem", None), ("stage1", r".*_stage_0_.*"), ("stage2", r".*_downsampling_block_0"),
    ("stage3", r".*_downsampling_block_1"), ("stage4", r".*_downsampling_block_2"),
)
INCEPTIONV3_GROUPS = _groups(
    ("stem", None), ("mixed0", 18),
    *[(f"mixed{n}", f"after:mixed{n - 1}") for n in range(1, 11)],
)
INCEPTIONRESNETV2_GROUPS = _groups(
    ("stem", None), ("mixed_5b", 18), ("block35", "after:mixed_5b"),
    ("mixed_6a", "after:block35_10_ac"), ("block17", "after:mixed_6a"),
    ("mixed_7a", "after:block17_20_ac"), ("block8", "after:mixed_7a"), ("conv_7b", r"conv_7b"),
)


def _mobilenetv3_groups(blocks: int) -> tuple[Group, ...]:
    return _groups(
        ("stem", None), ("block0", r"expanded_conv_[a-z].*"),
        *_numbered("block", blocks - 1, r"expanded_conv_{n}_.*"), ("top", r"conv_1"),
    )


def _efficientnet_groups(blocks: int) -> tuple[Group, ...]:
    return _groups(("stem", None), *_numbered("block", blocks, r"block{n}[a-z]_.*"), ("top", r"top_.*"))


def _spec(name, family, constructor, module, size, min_size, params, groups, **kwargs):
    return ApplicationsSpec(name=name, family=family, source=SOURCE, default_size=size, min_size=min_size,
                            params=params, group_names=tuple(g.name for g in groups), constructor=constructor,
                            preprocess_module=module, groups=groups, kwargs=kwargs)


_EFFNET_SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}
_EFFNET_PARAMS = {
    "b0": 4_049_571, "b1": 6_575_239, "b2": 7_768_569, "b3": 10_783_535,
    "b4": 17_673_823, "b5": 28_513_527, "b6": 40_960_143, "b7": 64_097_687,
}
_EFFNETV2 = {  # variant: (size, params, stages)
    "b0": (224, 5_919_312, 6), "b1": (240, 6_931_124, 6), "b2": (260, 8_769_374, 6),
    "b3": (300, 12_930_622, 6), "s": (384, 20_331_360, 6), "m": (480, 53_150_388, 7),
    "l": (480, 117_746_848, 7),
}

SPECS: dict[str, ApplicationsSpec] = {
    s.name: s
    for s in [
        _spec("vgg16", "vgg", "VGG16", "vgg16", 224, 32, 14_714_688, VGG16_GROUPS),
        _spec("vgg19", "vgg", "VGG19", "vgg19", 224, 32, 20_024_384, VGG16_GROUPS),
        _spec("resnet50", "resnet", "ResNet50", "resnet", 224, 32, 23_587_712, RESNET_GROUPS),
        _spec("resnet101", "resnet", "ResNet101", "resnet", 224, 32, 42_658_176, RESNET_GROUPS),
        _spec("resnet152", "resnet", "ResNet152", "resnet", 224, 32, 58_370_944, RESNET_GROUPS),
        _spec("resnet50v2", "resnetv2", "ResNet50V2", "resnet_v2", 224, 32, 23_564_800, RESNET_GROUPS),
        _spec("resnet101v2", "resnetv2", "ResNet101V2", "resnet_v2", 224, 32, 42_626_560, RESNET_GROUPS),
        _spec("resnet152v2", "resnetv2", "ResNet152V2", "resnet_v2", 224, 32, 58_331_648, RESNET_GROUPS),
        _spec("mobilenet", "mobilenet", "MobileNet", "mobilenet", 224, 32, 3_228_864, MOBILENET_GROUPS),
        _spec("mobilenetv2", "mobilenetv2", "MobileNetV2", "mobilenet_v2", 224, 32, 2_257_984, MOBILENETV2_GROUPS),
        _spec("mobilenetv3small", "mobilenetv3", "MobileNetV3Small", "mobilenet_v3", 224, 32, 939_120,
              _mobilenetv3_groups(11)),
        _spec("mobilenetv3large", "mobilenetv3", "MobileNetV3Large", "mobilenet_v3", 224, 32, 2_996_352,
              _mobilenetv3_groups(15)),
        *[
            _spec(f"efficientnet{v}", "efficientnet", f"EfficientNet{v.upper()}", "efficientnet",
                  _EFFNET_SIZES[v], 32, _EFFNET_PARAMS[v], _efficientnet_groups(7))
            for v in _EFFNET_SIZES
        ],
        *[
            _spec(f"efficientnetv2{v}", "efficientnetv2", f"EfficientNetV2{v.upper()}", "efficientnet_v2",
                  size, 32, params, _efficientnet_groups(stages))
            for v, (size, params, stages) in _EFFNETV2.items()
        ],
        _spec("inceptionv3", "inception", "InceptionV3", "inception_v3", 299, 75, 21_802_784, INCEPTIONV3_GROUPS),
        _spec("inceptionresnetv2", "inception", "InceptionResNetV2", "inception_resnet_v2", 299, 75,
              54_336_736, INCEPTIONRESNETV2_GROUPS),
        _spec("xception", "xception", "Xception", "xception", 299, 71, 20_861_480, XCEPTION_GROUPS),
        _spec("densenet121", "densenet", "DenseNet121", "densenet", 224, 32, 7_037_504, DENSENET_GROUPS),
        _spec("densenet169", "densenet", "DenseNet169", "densenet", 224, 32, 12_642_880, DENSENET_GROUPS),
        _spec("densenet201", "densenet", "DenseNet201", "densenet", 224, 32, 18_321_984, DENSENET_GROUPS),
        _spec("convnexttiny", "convnext", "ConvNeXtTiny", "convnext", 224, 32, 27_820_128, CONVNEXT_GROUPS),
        _spec("convnextsmall", "convnext", "ConvNeXtSmall", "convnext", 224, 32, 49_454_688, CONVNEXT_GROUPS),
        _spec("convnextbase", "convnext", "ConvNeXtBase", "convnext", 224, 32, 87_566_464, CONVNEXT_GROUPS),
        _spec("convnextlarge", "convnext", "ConvNeXtLarge", "convnext", 224, 32, 196_230_336, CONVNEXT_GROUPS),
        _spec("convnextxlarge", "convnext", "ConvNeXtXLarge", "convnext", 224, 32, 348_147_968, CONVNEXT_GROUPS),
    ]
}


def normalise(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def lookup(name: str) -> ApplicationsSpec | None:
    """The spec for a registry name or Keras class name (case-insensitive), or None."""
    return SPECS.get(normalise(name))


def resolve_groups(spec: ApplicationsSpec, layer_names: list[str]) -> list[tuple[str, int, int]]:
    """Map the spec's groups onto a built backbone's layers.

    Args:
        spec: the registry entry.
        layer_names: names of ``model.layers`` in order.

    Returns:
        ``(group name, first layer index, end index exclusive)`` per group,
        contiguous and covering every layer.

    Raises:
        ValueError: a marker matches no layer, or groups would be out of order
            (a registry bug, caught by the tests).
    """
    starts = [0]
    for group in spec.groups[1:]:
        starts.append(_find_start(group, layer_names, after=starts[-1]))
    ends = starts[1:] + [len(layer_names)]
    return [(g.name, s, e) for g, s, e in zip(spec.groups, starts, ends)]


def _find_start(group: Group, names: list[str], after: int) -> int:
    marker = group.start
    if isinstance(marker, int):
        index = marker
    else:
        skip = isinstance(marker, str) and marker.startswith("after:")
        pattern = re.compile(marker[len("after:"):] if skip else marker)
        found = next((i for i in range(after + 1, len(names)) if pattern.fullmatch(names[i])), None)
        if found is None:
            raise ValueError(f"group {group.name!r}: no layer matches {marker!r}")
        index = found + 1 if skip else found
    if not after < index < len(names):
        raise ValueError(f"group {group.name!r} starts at layer {index}, out of order")
    return index


def build_model(spec: ApplicationsSpec, image_size: int, weights: str = "imagenet"):
    """`spec`'s network without its classifier, at `image_size`: a functional keras.Model named ``backbone``.

    Raises:
        UnavailableError: ImageNet weights cannot be downloaded.
        TltoolError: a bad weights path, or a size below the minimum.
    """
    import keras

    check_image_size(spec, image_size)
    source = weights_source(weights)
    build = getattr(keras.applications, spec.constructor)
    kwargs = dict(include_top=False, input_shape=(image_size, image_size, 3), **spec.kwargs)
    if source == "imagenet":
        try:
            with warnings.catch_warnings():
                # MobileNets at sizes without their own weights load the 224 px
                # ones and say so; the same weights fit any size.
                warnings.filterwarnings("ignore", message=".*input_shape` is undefined or non-square")
                model = build(weights="imagenet", **kwargs)
        except Exception as e:  # Keras wraps download failures in a bare Exception
            if is_network_error(e):
                raise UnavailableError(_offline_message(spec, e)) from None
            raise
    else:
        model = build(weights=None, **kwargs)
        if source != "none":
            load_weights_file(model, spec.name, source)
    model.name = "backbone"
    return model


def _offline_message(spec: ApplicationsSpec, error: Exception) -> str:
    url = re.search(r"https?://\S+?(?=:\s|$)", str(error))
    filename = url.group(0).rsplit("/", 1)[-1] if url else "its weights file"
    reason = str(error).split(" -- ")[-1] if " -- " in str(error) else str(error)
    return (
        f"cannot download ImageNet weights for {spec.name} ({reason.strip()}). "
        f"Keras looked for {filename} in {keras_models_dir()} "
        f"(~/.keras/models, or $KERAS_HOME/models): put the file there, "
        f"or pass --weights PATH (a weights file for {spec.name}), "
        f"or --weights none (random initialisation, no transfer)"
    )
