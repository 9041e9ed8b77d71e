"""keras-hub presets as backbones: the second backbone source (ViT, DeiT, DINOv2/v3, Swin, SigLIP, CLIP, MetaCLIP 2).

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
preset keeps no image converter. The normalisation goes into the model
graph (`ScaleOffset`), so exports take plain 0-255 pixels.

Image-text models (SigLIP, CLIP, MetaCLIP 2) are accepted as whole-model
presets: tltool keeps their vision encoder (`Family.tower`) and drops the
text tower; a preset of the vision encoder alone works too.

Listing `SPECS` imports neither keras-hub nor TensorFlow; keras-hub is
imported only when one of its backbones is built or a run of one is loaded.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Any

from tltool.errors import TltoolError, UnavailableError
from tltool.models.backbone import Backbone, BackboneSpec, ExplainedMap, FreezeGroup, call_network, find_part
from tltool.models.hub_cnn import CONV_FAMILIES, IMAGENET_OFFSET, IMAGENET_SCALE, ConvFamily, conv_backbone
from tltool.models.hub_presets import PATCH, PRESETS, TEXT_TOWER

SOURCE = "keras-hub"
MIN_CNN_SIZE = 32  # five stride-2 stages leave a 1x1 map
EXTRA = "pip install 'tltool[hub]' (keras-hub >= 0.32, Python >= 3.11)"


@dataclass(frozen=True)
class Family:
    """Where a keras-hub family keeps its parts, and its defaults.

    `stem`, `blocks` and `norm` are paths from the vision network (the
    `tower` of an image-text model, else the backbone): the first part a
    layer name (or an attribute), then attributes; `stem` and `norm` may
    name several parts, comma-separated.
    """

    name: str
    stem: str  # the patch embedding (and what runs before the first block)
    blocks: str  # the list of transformer blocks
    norm: str  # the final norm (and, for SigLIP, its attention-pooling head)
    pooling: str  # its own pooling: a `TokenPooling` kind, or "attention" (the `head` layer)
    scale: tuple[float, float, float]  # normalisation of 0-255 pixels: x * scale + offset
    offset: tuple[float, float, float]
    prefix: str = "1"  # tokens before the patch tokens: a number, or "1+registers" (DINOv2/v3)
    any_size: bool = False  # whether its position embeddings are interpolated to any multiple of the patch
    group: str = "block"  # what each of `blocks` is called: block_1, block_2, ... (Swin: stage_1, ...)
    count: str = "num_layers"  # the config key that gives the number of blocks (a number, or a list per block)
    tower: str = ""  # an image-text model's attribute holding its vision encoder
    tokens: str = ""  # the layer whose output are the tokens, where the network's own output is pooled (SigLIP)
    after: str = ""  # a layer of the whole model that the tokens go through after the tower (MetaCLIP 2's norm)
    head: str = ""  # the family's own pooling layer ("attention" pooling), a path from the tower
    merges: bool = False  # whether each block after the first halves the token grid (Swin's patch merging)

    def prefix_tokens(self, config: dict) -> int:
        return 1 + int(config.get("num_register_tokens", 0)) if self.prefix == "1+registers" else int(self.prefix)

    def blocks_in(self, config: dict) -> int:
        value = config[self.count]
        return len(value) if isinstance(value, (list, tuple)) else int(value)

    def group_names(self, blocks: int) -> tuple[str, ...]:
        return ("stem", *(f"{self.group}_{i + 1}" for i in range(blocks)), "top")


_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_CLIP_SCALE = tuple(1 / (255 * s) for s in _CLIP_STD)
_CLIP_OFFSET = tuple(-m / s for m, s in zip(_CLIP_MEAN, _CLIP_STD))

FAMILIES = {
    "ViTBackbone": Family("vit", stem="vit_patching_and_embedding", blocks="vit_encoder.encoder_layers",
                          norm="vit_encoder.layer_norm", pooling="token", scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3),
    # DeiT: a ViT with a distillation token after the class token.
    "DeiTBackbone": Family("deit", stem="deit_patching_and_embedding", blocks="deit_encoder.encoder_layers",
                           norm="deit_encoder.layer_norm", pooling="token", scale=IMAGENET_SCALE,
                           offset=IMAGENET_OFFSET, prefix="2"),
    # DINOv2: register tokens after the class token; position embeddings interpolated (bicubic, in keras-hub)
    # to the input size; its linear evaluation reads the class token and the patch mean together.
    "DINOV2Backbone": Family("dinov2", stem="embeddings", blocks="encoder.layers", norm="layernorm",
                             pooling="token+avg", scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET,
                             prefix="1+registers", any_size=True),
    # Swin: no class token; its stages (each a run of shifted-window blocks, then a patch merge) are the groups.
    "SwinTransformerBackbone": Family("swin", stem="patch_embedding", blocks="stages", norm="norm", pooling="avg",
                                      scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET, prefix="0", group="stage",
                                      count="depths", merges=True),
    # DINOv3: rotary position embeddings, so any multiple of the patch; 4 register tokens.
    "DINOV3Backbone": Family("dinov3", stem="embeddings,rope_embedding", blocks="encoder.layers", norm="layernorm",
                             pooling="token+avg", scale=IMAGENET_SCALE, offset=IMAGENET_OFFSET,
                             prefix="1+registers", any_size=True),
    # SigLIP: no class token; its own pooling is the attention-pooling head after the final norm, which
    # trains with `top`.
    "SigLIPBackbone": Family("siglip", stem="embedding", blocks="encoder_layers", norm="post_layer_norm,head",
                             pooling="attention", scale=(1 / 127.5,) * 3, offset=(-1.0,) * 3, prefix="0",
                             tower="vision_encoder", tokens="post_layer_norm", head="head"),
    # CLIP: the class token after the encoder's final norm (the projection to the text space is dropped).
    "CLIPBackbone": Family("clip", stem="embedding,pre_layer_norm", blocks="encoder_layers", norm="layer_norm",
                           pooling="token", scale=_CLIP_SCALE, offset=_CLIP_OFFSET, tower="vision_encoder"),
    # MetaCLIP 2: as CLIP, but the final norm is the whole model's, applied after the vision encoder.
    "MetaCLIP2Backbone": Family("metaclip2", stem="embedding,pre_layer_norm", blocks="encoder_layers", norm="",
                                pooling="token", scale=_CLIP_SCALE, offset=_CLIP_OFFSET, tower="vision_encoder",
                                after="vision_post_layer_norm"),
}
# A preset of an image-text model's vision encoder alone is the same family.
FAMILIES.update({"SigLIPVisionEncoder": FAMILIES["SigLIPBackbone"], "CLIPVisionEncoder": FAMILIES["CLIPBackbone"]})
FAMILIES.update(CONV_FAMILIES)


@dataclass(frozen=True)
class HubSpec(BackboneSpec):
    """A keras-hub preset; `preset` is what `from_preset` takes (a name or a local directory)."""

    preset: str = ""
    class_name: str = ""
    prefix_tokens: int = 1
    patch: int = 1  # input sides must be a multiple of it

    @property
    def family_facts(self) -> Family | ConvFamily:
        return FAMILIES[self.class_name]

    def build(self, image_size: int, weights: str = "imagenet") -> Backbone:
        from tltool.models.weights import weights_source

        self._check_size(image_size)
        whole = _from_preset(self, weights_source(weights), image_size)
        family = self.family_facts
        if isinstance(family, ConvFamily):
            return conv_backbone(self, whole, _scale_offset(*_normalisation(self)))
        tower = getattr(whole, family.tower, None) or whole  # a vision encoder preset is its own tower
        model = _token_model(whole, tower, family)
        model.name = "backbone"
        for weight in model.weights:  # DINOv2/v3's mask token is for masked-image pretraining: no classifier uses it
            if weight.name == "mask_token":
                weight.trainable = False
        groups = [FreezeGroup("stem", _parts(tower, family.stem)),
                  *[FreezeGroup(f"{family.group}_{i + 1}", [block])
                    for i, block in enumerate(find_part(tower, family.blocks))],
                  FreezeGroup("top", _parts(tower, family.norm) + _parts(whole, family.after))]
        scale, offset = _normalisation(self)
        return TransformerBackbone(self, model, _scale_offset(scale, offset), groups,
                                   own_pool=find_part(tower, family.head) if family.head else None)

    def _check_size(self, image_size: int) -> None:
        if not self.any_size and image_size != self.default_size:
            raise TltoolError(f"--image-size {image_size}: {self.name} is built for {self.default_size} px (its "
                              f"position embeddings fix the size); give --image-size {self.default_size}")
        if image_size % self.patch:
            raise TltoolError(f"--image-size {image_size}: {self.name} cuts images into {self.patch} px patches; "
                              f"give a multiple of {self.patch} (e.g. {image_size - image_size % self.patch or self.patch})")

    def explained_map(self, network) -> ExplainedMap:
        """A transformer with a class token: the input of its last block, where the class token still reads
        every patch token (in the block's attention; the final patch tokens never reach a class-token
        pooling). Without one (Swin, SigLIP) and for CNNs: the output, which the pooling reads whole."""
        family = self.family_facts
        if isinstance(family, ConvFamily) or not self.prefix_tokens:
            return ExplainedMap(prefix_tokens=self.prefix_tokens)
        return ExplainedMap(_last_block(network, family.blocks), self.prefix_tokens)

    def describe(self) -> dict:
        row = super().describe()
        return {**row, "parameters_include_text_tower": True} if self.class_name in TEXT_TOWER else row

    def identity(self) -> str:
        if not os.path.isdir(self.preset):
            return self.label
        from tltool.files import content_hash

        names = ("config.json", "image_converter.json", "preprocessor.json", "model.weights.h5")
        return f"{self.label}-{content_hash([os.path.join(self.preset, n) for n in names])}"

    def kept_files(self) -> list[str]:
        if not os.path.isdir(self.preset):
            return []
        names = ("config.json", "metadata.json", "image_converter.json", "preprocessor.json")
        return [os.path.join(self.preset, n) for n in names if os.path.isfile(os.path.join(self.preset, n))]


def _token_model(whole, tower, family: Family):
    """The vision network from preprocessed pixels to its tokens (N, T, D)."""
    import keras

    if family.tokens:  # the network pools itself: stop at the tokens
        return keras.Model(tower.input, find_part(tower, family.tokens).output)
    if family.after:
        name, spec = next(iter(tower.input.items()))
        images = keras.Input(spec.shape[1:], name=name)
        return keras.Model({name: images}, find_part(whole, family.after)(tower({name: images})))
    return tower


def _last_block(network, blocks: str):
    """The last transformer block of a network, or of the vision encoder it holds (MetaCLIP 2's wrapper)."""
    for part in (network, *getattr(network, "layers", ())):
        try:
            return find_part(part, blocks)[-1]
        except (AttributeError, ValueError):
            continue
    raise TltoolError(f"{network.name}: no {blocks} in this network to explain; was it built by this tltool?")


def _parts(model, paths: str) -> list:
    return [find_part(model, path) for path in paths.split(",") if path]


@dataclass
class TransformerBackbone(Backbone):
    """A backbone whose output is tokens (N, T, D): pooled by `TokenPooling` (or the family's own pooling layer,
    `own_pool`), mapped to a grid for explanations."""

    own_pool: Any = None

    def forward(self, pixels):
        return call_network(self.model, self.preprocess(pixels))

    def pooling(self, kind: str = "auto"):
        family = self.spec.family_facts
        chosen = family.pooling if kind == "auto" else kind
        if chosen == "attention":
            if self.own_pool is None:
                raise TltoolError(f"head.pooling attention: {self.spec.name} ({family.name}) has no attention-pooling "
                                  "head; give auto, avg or max")
            return self.own_pool
        if "token" in chosen and not self.spec.prefix_tokens:
            raise TltoolError(f"head.pooling {kind}: {self.spec.name} ({family.name}) has no class token; "
                              "give auto, avg or max")
        if chosen not in self._pools:
            from tltool.models.layers import TokenPooling

            self._pools[chosen] = TokenPooling(chosen, self.spec.prefix_tokens, name="pool")
        return self._pools[chosen]

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
    tower = FAMILIES[class_name].tower
    if tower in settings:  # a whole image-text model: the vision encoder's settings
        settings = settings[tower].get("config", {})
    metadata = _read_json(folder, "metadata.json") if os.path.isfile(os.path.join(folder, "metadata.json")) else {}
    patch = settings.get("patch_size", 1)
    family = FAMILIES[class_name]
    shape = settings.get("image_shape") or settings.get("input_shape") or (None,)
    return _spec(folder, folder, class_name, int(metadata.get("parameter_count", 0)), int(shape[0] or 224),
                 family.blocks_in(settings), family.prefix_tokens(settings),
                 int(patch[0] if isinstance(patch, (list, tuple)) else patch))


def _spec(name: str, preset: str, class_name: str, params: int, side: int, blocks: int, prefix: int,
          patch: int | None = None) -> HubSpec:
    family = FAMILIES[class_name]
    patch = patch or PATCH.get(class_name, 1)
    smallest = (MIN_CNN_SIZE if isinstance(family, ConvFamily) else patch) if family.any_size else side
    return HubSpec(name=name, family=family.name, source=SOURCE, default_size=side,
                   min_size=smallest, params=params, group_names=family.group_names(blocks),
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
    from tltool.compat import siglip_token_count

    siglip_token_count()  # before any SigLIP is built or loaded
    return keras_hub


def _from_preset(spec: HubSpec, weights: str, image_size: int):
    keras_hub = require_keras_hub()
    from tltool.models.weights import is_network_error

    resized = {"image_shape": (image_size, image_size, 3)} if image_size != spec.default_size else {}
    try:
        with warnings.catch_warnings():  # Keras warns of functional internals it skips; every weight loads
            warnings.filterwarnings("ignore", message="Skipping nested container")
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
    """The preset's image converter (scale, offset), else the family's, said in one line."""
    converter = _preset_converter(spec.preset)
    if converter is not None and converter.scale is not None:
        return _per_channel(converter.scale), _per_channel(converter.offset or 0.0)
    family = spec.family_facts
    from tltool.console import say

    say(f"{spec.name}: the preset has no image converter; pixels are scaled as {family.name} presets are "
        f"(scale {_rounded(family.scale)}, offset {_rounded(family.offset)})")
    return list(family.scale), list(family.offset)


def _preset_converter(preset: str):
    """The image converter a preset (a name, or a local folder) was saved with; None where it has none."""
    keras_hub = require_keras_hub()
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except FileNotFoundError:  # keras-hub's word for "no image_converter.json in this preset"
        return None


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def _per_channel(value) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3


def _scale_offset(scale, offset):
    from tltool.models.layers import ScaleOffset

    return ScaleOffset(scale, offset, name="preprocess")
