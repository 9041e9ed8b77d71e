"""The backbone-source seam: what tltool needs from any pretrained feature extractor.

A *source* (`keras.applications` today; keras-hub presets next) turns a
backbone name into a `BackboneSpec`: static facts that `tltool backbones`
prints without importing TensorFlow. `spec.build(size, weights)` gives a
`Backbone`, and everything downstream (the classifier, freeze plans,
discriminative rates, the feature cache, explanations) talks to that object
only:

- ``preprocess``: a layer from 0-255 RGB pixels to what the network expects,
  so it lives in the exported graph;
- ``model``: the network, from preprocessed pixels to its last feature map
  (or a transformer's tokens); ``forward(pixels)`` runs both;
- ``groups``: the ordered freeze groups, each a list of layers, which may be
  nested inside other layers (keras-hub keeps every transformer block inside
  one encoder layer);
- ``spatial(features)``: the last spatial feature map, (N, h, w, C), for
  explanations; ``spec.explained_map(network)`` says where that map is in
  a built or loaded network (`ExplainedMap`), for Grad-CAM;
- ``pooling(kind)``: the layer from features to one vector per image, for
  the head, the feature cache and the data audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one backbone, the same for every source.

    Attributes:
        name: what `--backbone` takes, e.g. ``resnet50``.
        family: the architecture family, shared by sizes of one design.
        source: which source builds it (a key of `tltool.models.registry.SOURCES`).
        default_size: the input side its pretrained weights were trained at.
        min_size: the smallest input side it accepts.
        params: parameters without any classifier.
        group_names: the freeze groups, input to output.
        any_size: whether it takes sizes other than its default.
    """

    name: str
    family: str
    source: str
    default_size: int
    min_size: int
    params: int
    group_names: tuple[str, ...]
    any_size: bool = True

    def build(self, image_size: int, weights: str = "imagenet") -> "Backbone":
        """The backbone at `image_size` with its starting weights (imagenet, none or a file)."""
        raise NotImplementedError

    def explained_map(self, network) -> "ExplainedMap":
        """Where Grad-CAM reads this backbone's map in `network` (built, or loaded from a .keras file):
        a feature map's network, its output."""
        return ExplainedMap()

    def kept_files(self) -> list[str]:
        """Files a run keeps a copy of, so that it says what it was built from (a local preset's config)."""
        return []

    @property
    def label(self) -> str:
        """The name as Keras takes it in model names (a local preset's name is its folder)."""
        from tltool.files import safe_name

        return safe_name(self.name.rstrip("/\\").rsplit("/", 1)[-1])

    def identity(self) -> str:
        """What names this backbone's architecture in caches: its label (a local preset adds its files' hash)."""
        return self.label

    def describe(self) -> dict[str, Any]:
        """The row `tltool backbones --json` prints."""
        return {"name": self.name, "source": self.source, "family": self.family, "default_size": self.default_size,
                "min_size": self.min_size, "any_size": self.any_size, "parameters": self.params,
                "groups": list(self.group_names)}


@dataclass(frozen=True)
class ExplainedMap:
    """Where a network's explained map is: the input of `layer`, or the network's output when `layer` is None;
    `grid` turns it into (N, h, w, C), dropping the `prefix_tokens` (class and register tokens) of a
    transformer's tokens (N, T, D) and laying the patch tokens out as their square."""

    layer: Any = None
    prefix_tokens: int = 0

    def grid(self, tensor):
        import math

        import keras

        if len(tensor.shape) == 4:
            return tensor
        tokens = tensor[:, self.prefix_tokens:]
        if tokens.shape[1] is not None:
            side = math.isqrt(int(tokens.shape[1]))
        else:  # a block's input, traced without its static shape
            count = keras.ops.cast(keras.ops.shape(tokens)[1], "float32")
            side = keras.ops.cast(keras.ops.round(keras.ops.sqrt(count)), "int32")
        return keras.ops.reshape(tokens, (-1, side, side, int(tokens.shape[-1])))


@dataclass
class FreezeGroup:
    """One freeze group: its name and its layers (weighted or not), input to output."""

    name: str
    layers: list


@dataclass
class Backbone:
    """A built backbone: the network, its preprocessing and its freeze groups."""

    spec: BackboneSpec
    model: Any  # keras.Model: preprocessed pixels -> feature map
    preprocess: Any  # keras layer: 0-255 RGB -> the model's input
    groups: list[FreezeGroup]
    _pools: dict = field(default_factory=dict, repr=False)

    @property
    def units(self) -> list[tuple[str, Any]]:
        """(group name, layer) for every layer of every group, input to output: what freeze plans switch."""
        return [(group.name, layer) for group in self.groups for layer in group.layers]

    def forward(self, pixels):
        """0-255 RGB pixels -> the network's output (a feature map, or a transformer's tokens)."""
        return self.model(self.preprocess(pixels))

    def spatial(self, features):
        """The last spatial feature map (N, h, w, C) from the model's output."""
        return ExplainedMap(prefix_tokens=getattr(self.spec, "prefix_tokens", 0)).grid(features)

    def pooling(self, kind: str = "auto"):
        """The layer from the model's output to one vector per image (made once per kind, then shared);
        ``auto`` is the backbone's own (a feature map's: avg)."""
        kind = "avg" if kind == "auto" else kind
        if kind not in ("avg", "max"):
            from tltool.errors import TltoolError

            raise TltoolError(f"head.pooling {kind}: {self.spec.name} gives a feature map, with no tokens to pool "
                              "that way; give auto, avg or max")
        if kind not in self._pools:
            import keras

            layer = keras.layers.GlobalAveragePooling2D if kind == "avg" else keras.layers.GlobalMaxPooling2D
            self._pools[kind] = layer(name="pool")
        return self._pools[kind]


def call_network(network, inputs):
    """Call a backbone network on preprocessed pixels, by its input's name where it takes a dict (keras-hub:
    "images", or DINOv3's "pixel_values")."""
    names = network.input
    return network({next(iter(names)): inputs} if isinstance(names, dict) else inputs)


def find_part(model, path: str):
    """A part of a network by its path: a layer name (or an attribute of the model), then attributes (`encoder.layers`)."""
    first, *rest = path.split(".")
    part = getattr(model, first, None)
    if part is None:  # a layer the backbone keeps no attribute for
        part = model.get_layer(first)
    for name in rest:
        part = getattr(part, name)
    return part
