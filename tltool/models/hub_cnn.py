"""keras-hub's CNN families (timm and Keras weights): where their stages are, for `tltool.models.hub`.

A CNN backbone of keras-hub is a functional model whose top-level layers
are named by stage (``stack2_block0_1_conv``, ``block3a_expand``,
``stage_1_csp_conv_down_1``). A `ConvFamily` gives the regular expression
that reads the stage from a layer's name; the layers before the first stage
are ``stem``, and a layer that names no stage (a BatchNorm after the last
stage, an auto-numbered LayerNorm) belongs to the stage before it. HGNetV2
keeps its stages inside an encoder layer: `nested` is their path.

Each stage is a freeze group: ``stem``, ``stage_1`` ... (VGG and Xception:
``block_1`` ..., as their blocks are named). The output is the last stage's
feature map, pooled like any CNN's (``avg``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tltool.errors import TltoolError
from tltool.models.backbone import Backbone, FreezeGroup, find_part

IMAGENET_SCALE = tuple(1 / (255 * s) for s in (0.229, 0.224, 0.225))
IMAGENET_OFFSET = tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


@dataclass(frozen=True)
class ConvFamily:
    name: str
    stage: str  # a regex on top-level layer names; its first group numbers the stage
    count: str  # the config key whose length is the number of stages
    extra: int = 0  # stages beyond the `count` ones (MobileNet: its first depthwise block and its last conv)
    stem: bool = True  # whether layers come before the first stage
    group: str = "stage"
    nested: str = ""  # the path to a list of stage layers, where the stages are nested (HGNetV2)
    scale: tuple[float, float, float] = IMAGENET_SCALE
    offset: tuple[float, float, float] = IMAGENET_OFFSET
    any_size: bool = True
    pooling: str = "avg"
    tower: str = ""

    def blocks_in(self, config: dict) -> int:
        return len(config[self.count]) + self.extra

    def prefix_tokens(self, config: dict) -> int:
        return 0

    def group_names(self, stages: int) -> tuple[str, ...]:
        return (*(("stem",) if self.stem else ()), *(f"{self.group}_{i + 1}" for i in range(stages)))


CONV_FAMILIES = {
    "ResNetBackbone": ConvFamily("resnet", r"stack(\d+)_", "stackwise_num_blocks"),
    "EfficientNetBackbone": ConvFamily("efficientnet", r"block(\d+)[a-z]", "stackwise_num_repeats"),
    "MobileNetBackbone": ConvFamily("mobilenet", r"block_(\d+)_", "stackwise_num_blocks", extra=2),
    "CSPNetBackbone": ConvFamily("cspnet", r"stage_(\d+)_", "stackwise_depth"),
    "HGNetV2Backbone": ConvFamily("hgnetv2", "", "depths", nested="encoder_layer.stages_list"),
    "DenseNetBackbone": ConvFamily("densenet", r"(?:stack|transition)(\d+)_", "stackwise_num_repeats"),
    "VGGBackbone": ConvFamily("vgg", r"block(\d+)_", "stackwise_num_repeats", stem=False, group="block"),
    "XceptionBackbone": ConvFamily("xception", r"block(\d+)_", "stackwise_conv_filters", stem=False,
                                   group="block", scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3),
    "MiTBackbone": ConvFamily("mit", r"(?:patch_and_embed|hierarchical_encoder|output_level)_(\d+)",
                              "layerwise_depths", stem=False),
}


def conv_backbone(spec, model, preprocess) -> Backbone:
    """The built keras-hub CNN as a tltool backbone: its last feature map, and a group per stage."""
    import keras

    family = spec.family_facts
    groups = _nested_groups(model, family) if family.nested else _named_groups(model, family)
    if isinstance(model.output, dict):  # HGNetV2 gives every stage's map: keep the last
        model = keras.Model(model.input, list(model.output.values())[-1])
    if [g.name for g in groups] != list(spec.group_names):
        raise TltoolError(f"--backbone {spec.name}: tltool expected the groups {', '.join(spec.group_names)} "
                          f"but found {', '.join(g.name for g in groups)}; a keras-hub version it does not know?")
    model.name = "backbone"
    return Backbone(spec, model, preprocess, groups)


def _named_groups(model, family: ConvFamily) -> list[FreezeGroup]:
    pattern, groups, seen = re.compile(family.stage), [FreezeGroup("stem", [])], []
    for layer in model.layers:
        found = pattern.match(layer.name)
        if found and found.group(1) not in seen:
            seen.append(found.group(1))
            groups.append(FreezeGroup(f"{family.group}_{len(seen)}", []))
        groups[-1].layers.append(layer)
    if not family.stem:  # only the input layer came first: it joins the first stage
        groups[1].layers[:0] = groups.pop(0).layers
    return groups


def _nested_groups(model, family: ConvFamily) -> list[FreezeGroup]:
    stages = list(find_part(model, family.nested))
    holder = find_part(model, family.nested.split(".")[0])
    stem = [layer for layer in model.layers if layer is not holder]
    return [FreezeGroup("stem", stem), *[FreezeGroup(f"{family.group}_{i + 1}", [s]) for i, s in enumerate(stages)]]
