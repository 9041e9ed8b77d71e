"""keras-hub presets as backbones: the second backbone source (transformers first: ViT and DeiT today).

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
    """Where a keras-hub family keeps its parts, and its defaults."""

    name: str
    stem: str  # the patch embedding layer
    encoder: str  # the layer that holds the blocks
    blocks: str  # the encoder's attribute listing them
    norm: str  # the encoder's final norm
    pooling: str  # its own pooling (`TokenPooling` kind)
    scale: tuple[float, float, float]  # normalisation of 0-255 pixels: x * scale + offset
    offset: tuple[float, float, float]
    prefix_tokens: int = 1  # class (and register) tokens before the patch tokens


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

FAMILIES = {
    "ViTBackbone": Family("vit", stem="vit_patching_and_embedding", encoder="vit_encoder", blocks="encoder_layers",
                          norm="layer_norm", pooling="token", scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3),
    # DeiT: a ViT with a distillation token after the class token.
    "DeiTBackbone": Family("deit", stem="deit_patching_and_embedding", encoder="deit_encoder",
                           blocks="encoder_layers", norm="layer_norm", pooling="token",
                           scale=tuple(1 / (255 * s) for s in _IMAGENET_STD),
                           offset=tuple(-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)), prefix_tokens=2),
}

# Presets keras-hub publishes for the families above: name -> (class, parameters, image side, blocks), from
# keras-hub 0.32's preset metadata (tests/test_hub.py checks the table against it).
PRESETS = {
    "vit_base_patch16_224_imagenet": ("ViTBackbone", 85_798_656, 224, 12),
    "vit_base_patch16_384_imagenet": ("ViTBackbone", 86_090_496, 384, 12),
    "vit_large_patch16_224_imagenet": ("ViTBackbone", 303_301_632, 224, 24),
    "vit_large_patch16_384_imagenet": ("ViTBackbone", 303_690_752, 384, 24),
    "vit_base_patch32_384_imagenet": ("ViTBackbone", 87_528_192, 384, 12),
    "vit_large_patch32_384_imagenet": ("ViTBackbone", 305_607_680, 384, 24),
    "vit_base_patch16_224_imagenet21k": ("ViTBackbone", 85_798_656, 224, 12),
    "vit_base_patch32_224_imagenet21k": ("ViTBackbone", 87_455_232, 224, 12),
    "vit_huge_patch14_224_imagenet21k": ("ViTBackbone", 630_764_800, 224, 32),
    "vit_large_patch16_224_imagenet21k": ("ViTBackbone", 303_301_632, 224, 24),
    "vit_large_patch32_224_imagenet21k": ("ViTBackbone", 305_510_400, 224, 24),
    "deit_tiny_distilled_patch16_224_imagenet": ("DeiTBackbone", 5_524_800, 224, 12),
    "deit_small_distilled_patch16_224_imagenet": ("DeiTBackbone", 21_666_432, 224, 12),
    "deit_base_distilled_patch16_224_imagenet": ("DeiTBackbone", 85_800_192, 224, 12),
    "deit_base_distilled_patch16_384_imagenet": ("DeiTBackbone", 86_092_032, 384, 12),
}


@dataclass(frozen=True)
class HubSpec(BackboneSpec):
    """A keras-hub preset; `preset` is what `from_preset` takes (a name or a local directory)."""

    preset: str = ""
    class_name: str = ""

    @property
    def family_facts(self) -> Family:
        return FAMILIES[self.class_name]

    def build(self, image_size: int, weights: str = "imagenet") -> Backbone:
        from tltool.models.weights import weights_source

        if image_size != self.default_size:
            raise TltoolError(f"--image-size {image_size}: {self.name} is built for {self.default_size} px (its "
                              f"position embeddings fix the size); give --image-size {self.default_size}")
        model = _from_preset(self, weights_source(weights))
        model.name = "backbone"
        family = self.family_facts
        encoder = model.get_layer(family.encoder)
        blocks = list(getattr(encoder, family.blocks))
        groups = [FreezeGroup("stem", [model.get_layer(family.stem)]),
                  *[FreezeGroup(f"block_{i + 1}", [block]) for i, block in enumerate(blocks)],
                  FreezeGroup("top", [getattr(encoder, family.norm)])]
        scale, offset = _normalisation(self)
        return TransformerBackbone(self, model, _scale_offset(scale, offset), groups)


    def kept_files(self) -> list[str]:
        if not os.path.isdir(self.preset):
            return []
        names = ("config.json", "metadata.json", "image_converter.json", "preprocessor.json")
        return [os.path.join(self.preset, n) for n in names if os.path.isfile(os.path.join(self.preset, n))]


class TransformerBackbone(Backbone):
    """A backbone whose output is tokens (N, T, D): pooled by `TokenPooling`, mapped to a grid for explanations."""

    def pooling(self, kind: str = "auto"):
        if kind not in self._pools:
            from tltool.models.layers import TokenPooling

            family = self.spec.family_facts
            self._pools[kind] = TokenPooling(family.pooling if kind == "auto" else kind, family.prefix_tokens,
                                             name="pool")
        return self._pools[kind]

    def spatial(self, features):
        import keras

        tokens = features[:, self.spec.family_facts.prefix_tokens:]
        side = int(round(int(tokens.shape[1]) ** 0.5))
        return keras.ops.reshape(tokens, (-1, side, side, int(tokens.shape[-1])))


def lookup(name: str) -> HubSpec | None:
    """The spec for a local preset directory or a known preset name; None for anything else."""
    if os.path.isfile(os.path.join(os.path.expanduser(name), "config.json")):
        return _local_spec(os.path.abspath(os.path.expanduser(name)))
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
    side = int(settings["image_shape"][0])
    blocks = int(settings["num_layers"])
    return _spec(folder, folder, class_name, int(metadata.get("parameter_count", 0)), side, blocks)


def _spec(name: str, preset: str, class_name: str, params: int, side: int, blocks: int) -> HubSpec:
    family = FAMILIES[class_name]
    groups = ("stem", *(f"block_{i + 1}" for i in range(blocks)), "top")
    return HubSpec(name=name, family=family.name, source=SOURCE, default_size=side, min_size=side, params=params,
                   group_names=groups, any_size=False, preset=preset, class_name=class_name)


SPECS = {name: _spec(name, name, cls, params, side, blocks) for name, (cls, params, side, blocks) in PRESETS.items()}


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


def _from_preset(spec: HubSpec, weights: str):
    keras_hub = require_keras_hub()
    from tltool.models.weights import is_network_error

    try:
        model = keras_hub.models.Backbone.from_preset(spec.preset, load_weights=weights == "imagenet")
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
