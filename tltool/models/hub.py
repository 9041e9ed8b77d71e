"""keras-hub presets as backbones: the second backbone source (transformers first: ViT, DeiT, DINOv2, Swin).

`--backbone` takes a **local preset directory** (``config.json``,
``metadata.json`` and ``model.weights.h5``, as keras-hub's
``Backbone.save_to_preset`` writes it) or a keras-hub preset name of
`PRESETS`, which keras-hub downloads (through kagglehub) the first time.
`--weights` keeps its meaning: ``imagenet``/``pretrained`` is the preset's
weights, ``none`` a random start from the preset's config, and a PATH a
weights file for the same config.

A family (`FAMILIES`, keyed by the keras-hub class) says where the freeze
groups are inside the network: the patch embedding is ``stem``, each
transformer block its own group (``block_1`` ...), the final norm ``top``;
which pooling is its own; and the normalisation its presets use when the
preset folder keeps no image converter. The normalisation goes into the
model graph (`ScaleOffset`), so exports take plain 0-255 pixels.

Listing `SPECS` imports neither keras-hub nor TensorFlow; keras-hub is
imported only when one of its backbones is built or a run of one is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tltool.errors import TltoolError, UnavailableError
from tltool.models.backbone import Backbone, BackboneSpec, FreezeGroup

SOURCE = "keras-hub"
EXTRA = "pip install 'tltool[hub]' (keras-hub >= 0.32, Python >= 3.11)"


@dataclass(frozen=True)
class Family:
    """Where a keras-hub family keeps its parts, and its defaults.

    `stem`, `blocks` and `norm` are paths from the backbone: the first part a
    layer name (or an attribute of the model), then attributes.
    """

    name: str
    stem: str  # the patch embedding layer
    blocks: str  # the list of transformer blocks
    norm: str  # the final norm
    pooling: str  # its own pooling (`TokenPooling` kind)
    scale: tuple[float, float, float]  # normalisation of 0-255 pixels: x * scale + offset
    offset: tuple[float, float, float]
    prefix: str = "1"  # tokens before the patch tokens: a number, or "1+registers" (DINOv2)
    any_size: bool = False  # whether its position embeddings are interpolated to any multiple of the patch
    group: str = "block"  # what each of `blocks` is called: block_1, block_2, ... (Swin: stage_1, ...)
    count: str = "num_layers"  # the config key that gives the number of blocks (a number, or a list per block)

    def prefix_tokens(self, config: dict) -> int:
        return 1 + int(config.get("num_register_tokens", 0)) if self.prefix == "1+registers" else int(self.prefix)

    def blocks_in(self, config: dict) -> int:
        value = config[self.count]
        return len(value) if isinstance(value, (list, tuple)) else int(value)


_IMAGENET_SCALE = tuple(1 / (255 * s) for s in (0.229, 0.224, 0.225))
_IMAGENET_OFFSET = tuple(-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))

FAMILIES = {
    "ViTBackbone": Family("vit", stem="vit_patching_and_embedding", blocks="vit_encoder.encoder_layers",
                          norm="vit_encoder.layer_norm", pooling="token", scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3),
    # DeiT: a ViT with a distillation token after the class token.
    "DeiTBackbone": Family("deit", stem="deit_patching_and_embedding", blocks="deit_encoder.encoder_layers",
                           norm="deit_encoder.layer_norm", pooling="token", scale=_IMAGENET_SCALE,
                           offset=_IMAGENET_OFFSET, prefix="2"),
    # DINOv2: register tokens after the class token; position embeddings interpolated (bicubic, in keras-hub)
    # to the input size; its linear evaluation reads the class token and the patch mean together.
    "DINOV2Backbone": Family("dinov2", stem="embeddings", blocks="encoder.layers", norm="layernorm",
                             pooling="token+avg", scale=_IMAGENET_SCALE, offset=_IMAGENET_OFFSET,
                             prefix="1+registers", any_size=True),
    # Swin: no class token; its stages (each a run of shifted-window blocks, then a patch merge) are the groups.
    "SwinTransformerBackbone": Family("swin", stem="patch_embedding", blocks="stages", norm="norm", pooling="avg",
                                      scale=_IMAGENET_SCALE, offset=_IMAGENET_OFFSET, prefix="0", group="stage",
                                      count="depths"),
}

# Presets keras-hub publishes for the families above: name -> (class, parameters, image side, blocks, prefix
# tokens), from keras-hub 0.32's preset metadata (tests/test_hub.py checks the table against it).
PRESETS = {
    "vit_base_patch16_224_imagenet": ("ViTBackbone", 85_798_656, 224, 12, 1),
    "vit_base_patch16_384_imagenet": ("ViTBackbone", 86_090_496, 384, 12, 1),
    "vit_large_patch16_224_imagenet": ("ViTBackbone", 303_301_632, 224, 24, 1),
    "vit_large_patch16_384_imagenet": ("ViTBackbone", 303_690_752, 384, 24, 1),
    "vit_base_patch32_384_imagenet": ("ViTBackbone", 87_528_192, 384, 12, 1),
    "vit_large_patch32_384_imagenet": ("ViTBackbone", 305_607_680, 384, 24, 1),
    "vit_base_patch16_224_imagenet21k": ("ViTBackbone", 85_798_656, 224, 12, 1),
    "vit_base_patch32_224_imagenet21k": ("ViTBackbone", 87_455_232, 224, 12, 1),
    "vit_huge_patch14_224_imagenet21k": ("ViTBackbone", 630_764_800, 224, 32, 1),
    "vit_large_patch16_224_imagenet21k": ("ViTBackbone", 303_301_632, 224, 24, 1),
    "vit_large_patch32_224_imagenet21k": ("ViTBackbone", 305_510_400, 224, 24, 1),
    "deit_tiny_distilled_patch16_224_imagenet": ("DeiTBackbone", 5_524_800, 224, 12, 2),
    "deit_small_distilled_patch16_224_imagenet": ("DeiTBackbone", 21_666_432, 224, 12, 2),
    "deit_base_distilled_patch16_224_imagenet": ("DeiTBackbone", 85_800_192, 224, 12, 2),
    "deit_base_distilled_patch16_384_imagenet": ("DeiTBackbone", 86_092_032, 384, 12, 2),
    "dinov2_small": ("DINOV2Backbone", 22_582_656, 224, 12, 1),
    "dinov2_base": ("DINOV2Backbone", 87_632_640, 224, 12, 1),
    "dinov2_large": ("DINOV2Backbone", 305_771_520, 224, 24, 1),
    "dinov2_giant": ("DINOV2Backbone", 1_138_585_088, 224, 40, 1),
    "dinov2_with_registers_small": ("DINOV2Backbone", 22_584_192, 224, 12, 5),
    "dinov2_with_registers_base": ("DINOV2Backbone", 87_635_712, 224, 12, 5),
    "dinov2_with_registers_large": ("DINOV2Backbone", 305_775_616, 224, 24, 5),
    "dinov2_with_registers_giant": ("DINOV2Backbone", 1_138_591_232, 224, 40, 5),
    "swin_tiny_patch4_window7_224": ("SwinTransformerBackbone", 27_519_354, 224, 4, 0),
    "swin_small_patch4_window7_224": ("SwinTransformerBackbone", 48_837_258, 224, 4, 0),
    "swin_base_patch4_window7_224": ("SwinTransformerBackbone", 86_743_224, 224, 4, 0),
    "swin_base_patch4_window12_384": ("SwinTransformerBackbone", 86_878_584, 384, 4, 0),
    "swin_large_patch4_window7_224": ("SwinTransformerBackbone", 194_995_476, 224, 4, 0),
    "swin_large_patch4_window12_384": ("SwinTransformerBackbone", 195_198_516, 384, 4, 0),
}
PATCH = {"DINOV2Backbone": 14}  # the patch side of the published presets, where any size is allowed


@dataclass(frozen=True)
class HubSpec(BackboneSpec):
    """A keras-hub preset; `preset` is what `from_preset` takes (a name or a local directory)."""

    preset: str = ""
    class_name: str = ""
    prefix_tokens: int = 1
    patch: int = 1  # input sides must be a multiple of it

    @property
    def family_facts(self) -> Family:
        return FAMILIES[self.class_name]

    def build(self, image_size: int, weights: str = "imagenet") -> Backbone:
        from tltool.models.weights import weights_source

        self._check_size(image_size)
        model = _from_preset(self, weights_source(weights), image_size)
        model.name = "backbone"
        family = self.family_facts
        blocks = list(_part(model, family.blocks))
        groups = [FreezeGroup("stem", [_part(model, family.stem)]),
                  *[FreezeGroup(f"{family.group}_{i + 1}", [block]) for i, block in enumerate(blocks)],
                  FreezeGroup("top", [_part(model, family.norm)])]
        scale, offset = _normalisation(self)
        return TransformerBackbone(self, model, _scale_offset(scale, offset), groups)

    def _check_size(self, image_size: int) -> None:
        if not self.any_size and image_size != self.default_size:
            raise TltoolError(f"--image-size {image_size}: {self.name} is built for {self.default_size} px (its "
                              f"position embeddings fix the size); give --image-size {self.default_size}")
        if image_size % self.patch:
            raise TltoolError(f"--image-size {image_size}: {self.name} cuts images into {self.patch} px patches; "
                              f"give a multiple of {self.patch} (e.g. {image_size - image_size % self.patch or self.patch})")

    def kept_files(self) -> list[str]:
        if not os.path.isdir(self.preset):
            return []
        names = ("config.json", "metadata.json", "image_converter.json", "preprocessor.json")
        return [os.path.join(self.preset, n) for n in names if os.path.isfile(os.path.join(self.preset, n))]


def _part(model, path: str):
    """A part of a keras-hub backbone by its `Family` path."""
    first, *rest = path.split(".")
    part = getattr(model, first, None)
    if part is None:  # a layer the backbone keeps no attribute for
        part = model.get_layer(first)
    for name in rest:
        part = getattr(part, name)
    return part


class TransformerBackbone(Backbone):
    """A backbone whose output is tokens (N, T, D): pooled by `TokenPooling`, mapped to a grid for explanations."""

    def forward(self, pixels):
        inputs = self.preprocess(pixels)
        return self.model({"images": inputs} if isinstance(self.model.input, dict) else inputs)

    def pooling(self, kind: str = "auto"):
        family = self.spec.family_facts
        if "token" in (family.pooling if kind == "auto" else kind) and not self.spec.prefix_tokens:
            raise TltoolError(f"head.pooling {kind}: {self.spec.name} ({family.name}) has no class token; "
                              "give avg or max")
        if kind not in self._pools:
            from tltool.models.layers import TokenPooling

            self._pools[kind] = TokenPooling(family.pooling if kind == "auto" else kind, self.spec.prefix_tokens,
                                             name="pool")
        return self._pools[kind]

    def spatial(self, features):
        import keras

        tokens = features[:, self.spec.prefix_tokens:]
        side = int(round(int(tokens.shape[1]) ** 0.5))
        return keras.ops.reshape(tokens, (-1, side, side, int(tokens.shape[-1])))


def lookup(name: str) -> HubSpec | None:
    """The spec for a local preset directory or a known preset name; None for anything else.

    Raises:
        TltoolError: a path that is no preset directory.
    """
    folder = os.path.expanduser(name)
    if os.path.isfile(os.path.join(folder, "config.json")):
        return _local_spec(os.path.abspath(folder))
    if os.sep in name or os.path.isdir(folder):
        raise TltoolError(f"--backbone {name}: no keras-hub preset directory there (it holds config.json, "
                          "metadata.json and model.weights.h5); give a registry name or such a folder")
    return SPECS.get(name)


def _local_spec(folder: str) -> HubSpec:
    config = _read_json(folder, "config.json")
    class_name = config.get("class_name", "")
    if class_name not in FAMILIES:
        known = ", ".join(sorted(FAMILIES))
        raise TltoolError(f"--backbone {folder}: a keras-hub {class_name or 'preset'} is not a backbone tltool "
                          f"fine-tunes yet (it knows {known})")
    settings = config.get("config", {})
    metadata = _read_json(folder, "metadata.json") if os.path.isfile(os.path.join(folder, "metadata.json")) else {}
    patch = settings.get("patch_size", 1)
    family = FAMILIES[class_name]
    return _spec(folder, folder, class_name, int(metadata.get("parameter_count", 0)), int(settings["image_shape"][0]),
                 family.blocks_in(settings), family.prefix_tokens(settings),
                 int(patch[0] if isinstance(patch, (list, tuple)) else patch))


def _spec(name: str, preset: str, class_name: str, params: int, side: int, blocks: int, prefix: int,
          patch: int | None = None) -> HubSpec:
    family = FAMILIES[class_name]
    groups = ("stem", *(f"{family.group}_{i + 1}" for i in range(blocks)), "top")
    patch = patch or PATCH.get(class_name, 1)
    return HubSpec(name=name, family=family.name, source=SOURCE, default_size=side,
                   min_size=patch if family.any_size else side, params=params, group_names=groups,
                   any_size=family.any_size, preset=preset, class_name=class_name, prefix_tokens=prefix, patch=patch)


SPECS = {name: _spec(name, name, *facts) for name, facts in PRESETS.items()}


def _read_json(folder: str, name: str) -> dict:
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise TltoolError(f"--backbone {folder}: cannot read {name} ({e}); a keras-hub preset directory holds "
                          "config.json, metadata.json and model.weights.h5") from None


def require_keras_hub():
    """keras_hub, or a one-line error naming the extra to install."""
    try:
        import keras_hub
    except ImportError:
        raise TltoolError(f"keras-hub backbones need keras-hub: {EXTRA}") from None
    return keras_hub


def _from_preset(spec: HubSpec, weights: str, image_size: int):
    keras_hub = require_keras_hub()
    from tltool.models.weights import is_network_error

    resized = {"image_shape": (image_size, image_size, 3)} if image_size != spec.default_size else {}
    try:
        model = keras_hub.models.Backbone.from_preset(spec.preset, load_weights=weights == "imagenet", **resized)
    except Exception as e:  # kagglehub and huggingface_hub raise their own kinds on a failed download
        if os.path.isdir(spec.preset) or not (is_network_error(e) or "kaggle" in repr(e).lower()):
            raise
        cache = os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")
        raise UnavailableError(f"cannot download keras-hub preset {spec.preset!r} (offline?); keras-hub caches "
                               f"downloads in {cache}: on a machine with internet, save it with keras_hub.models."
                               "Backbone.from_preset(NAME).save_to_preset(DIR) and pass --backbone DIR") from None
    if weights not in ("imagenet", "none"):
        model.load_weights(weights)
    return model


def _normalisation(spec: HubSpec) -> tuple[list[float], list[float]]:
    """The preset's image converter (scale, offset), else the family's."""
    family = spec.family_facts
    if os.path.isdir(spec.preset):
        for name in ("image_converter.json", "preprocessor.json"):
            path = os.path.join(spec.preset, name)
            if os.path.isfile(path):
                converter = _read_json(spec.preset, name).get("config", {})
                converter = converter.get("image_converter", {}).get("config", converter)
                if converter.get("scale") is not None:
                    return _per_channel(converter["scale"]), _per_channel(converter.get("offset") or 0.0)
    return list(family.scale), list(family.offset)


def _per_channel(value) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3


def _scale_offset(scale, offset):
    from tltool.models.layers import ScaleOffset

    return ScaleOffset(scale, offset, name="preprocess")
