"""Backbone benchmark (issue 20): speed and size of the smallest preset of each keras-hub family.

For each family, its smallest published preset is built from its keras-hub
constructor with the published hyperparameters and **random weights** (no
preset can be downloaded here; speed and size do not depend on the weights),
saved as a local preset, and loaded by tltool as a user's `--backbone DIR`
would be. ResNet50 and EfficientNetB0 of `keras.applications` stand beside
them. Each model runs in a fresh process, so each peak memory is its own.

Per model, at 224 px (a preset's own side where it is fixed), batch 32:

- forward img/s: the classifier's inference graph (preprocessing, backbone,
  pooling, head) on pixels in memory;
- train img/s: `train_on_batch` with every layer trainable (Adam);
- parameters of the classifier tltool exports (an image-text model's text
  tower is dropped: SigLIP and CLIP are built as their vision encoder);
- fp32 and int8 LiteRT file sizes (int8: full integer, calibrated on 4
  images, no float fallback search).

MetaCLIP 2 ships only ViT-H/14 and larger: its forward pass is measured, and
no file is written (its fp32 flatbuffer would pass LiteRT's 2 GB limit).

    python benchmarks/backbones.py [--batch 32] [--batches 2] [--only vit,swin]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import parse_args, peak_rss_mb, run_if_stage, run_stage  # noqa: E402

VISION = {"image_shape": (224, 224, 3)}
B16 = {**VISION, "patch_size": 16, "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "intermediate_dim": 3072}
# family -> (smallest preset, keras-hub class, published hyperparameters); None: a keras.applications CNN
MODELS = {
    "resnet50": ("resnet50", None, {}),
    "efficientnetb0": ("efficientnetb0", None, {}),
    "vit": ("vit_base_patch16_224_imagenet", "ViTBackbone",
            {**VISION, "patch_size": (16, 16), "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
             "mlp_dim": 3072}),
    "deit": ("deit_tiny_distilled_patch16_224_imagenet", "DeiTBackbone",
             {**VISION, "patch_size": (16, 16), "num_layers": 12, "num_heads": 3, "hidden_dim": 192,
              "intermediate_dim": 768}),
    "dinov2": ("dinov2_small", "DINOV2Backbone",
               {**VISION, "patch_size": 14, "num_layers": 12, "hidden_dim": 384, "num_heads": 6,
                "intermediate_dim": 1536, "position_embedding_shape": (518, 518, 3)}),
    "dinov3": ("dinov3_vit_small_lvd1689m", "DINOV3Backbone",
               {**VISION, "patch_size": 16, "num_layers": 12, "hidden_dim": 384, "num_heads": 6,
                "intermediate_dim": 1536, "num_register_tokens": 4}),
    "swin": ("swin_tiny_patch4_window7_224", "SwinTransformerBackbone",
             {**VISION, "patch_size": 4, "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
              "window_size": 7}),
    "siglip": ("siglip_base_patch16_224 (vision encoder)", "SigLIPVisionEncoder", B16),
    "clip": ("clip_vit_base_patch16 (vision encoder)", "CLIPVisionEncoder", B16),
    "metaclip2": ("metaclip_2_vit_huge_patch14_224", "MetaCLIP2Backbone",
                  {**VISION, "patch_size": 14, "hidden_dim": 1280, "num_layers": 32, "num_heads": 16,
                   "intermediate_dim": 5120}),
}
FORWARD_ONLY = {"metaclip2"}


def measure(args: dict) -> dict:
    import keras

    from tltool.errors import TltoolError
    from tltool.models.classifier import build_classifier
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head

    family, batch, batches = args["family"], args["batch"], args["batches"]
    preset, cls, kwargs = MODELS[family]
    with tempfile.TemporaryDirectory(dir=args["work"]) as folder:
        name = preset if cls is None else _saved_preset(cls, kwargs, os.path.join(folder, "preset"))
        spec = get_backbone(name)
        clf = build_classifier(spec.build(224, "none"), 10, 224, Head(), Augment(flip="none"))
        pixels = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
        row = {"family": family, "preset": preset, "parameters": clf.inference.count_params(),
               "forward": _rate(lambda: clf.inference(pixels, training=False), batch, batches)}
        if family not in FORWARD_ONLY:
            labels = keras.utils.to_categorical(np.arange(batch) % 10, 10)
            clf.model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy")
            row["train"] = _rate(lambda: clf.model.train_on_batch(pixels, labels), batch, batches)
            try:
                row.update(_file_sizes(clf.inference, pixels[:4], folder))
            except TltoolError as e:  # a format that cannot hold the family (Swin's tf.Roll in LiteRT)
                row["refused"] = str(e).split(": the model uses the TensorFlow op ")[-1].split(",")[0]
    row["peak_mb"] = peak_rss_mb()
    return row


def _saved_preset(cls: str, kwargs: dict, folder: str) -> str:
    import keras_hub

    models = keras_hub.models
    if cls == "MetaCLIP2Backbone":  # the vision tower's final norm is the whole model's; the text tower is tiny
        text = models.MetaCLIP2TextEncoder(vocabulary_size=64, embedding_dim=32, hidden_dim=32, num_layers=1,
                                           num_heads=2, intermediate_dim=64)
        model = models.MetaCLIP2Backbone(models.MetaCLIP2VisionEncoder(**kwargs), text, projection_dim=1024)
    else:
        model = getattr(models, cls)(**kwargs)
    model.save_to_preset(folder)
    return folder


def _rate(step, batch: int, batches: int) -> float:
    """Images per second of `step` after one warm-up call."""
    step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batch * batches / (time.perf_counter() - start)


def _file_sizes(model, pixels, folder: str) -> dict:
    from tltool.serving.formats import export_litert, model_info, signature
    from tltool.serving.quantize import int8_model
    from tltool.tasks import get_task

    info = model_info([str(i) for i in range(10)], 224, "squash", "", get_task("single-label"))
    path = export_litert(model, os.path.join(folder, "model.tflite"), info)
    int8 = int8_model(model, signature(info), pixels, lambda: ([image[None]] for image in pixels),
                      float_layers="none")
    return {"fp32_mb": os.path.getsize(path) / 2**20, "int8_mb": len(int8.flatbuffer) / 2**20}


def main() -> None:
    ns = parse_args(__doc__, [(("--batches",), {"type": int, "default": 2}), (("--only",), {"default": ""})])
    if run_if_stage(ns, {"measure": measure}):
        return
    os.makedirs(ns.work, exist_ok=True)
    families = ns.only.split(",") if ns.only else list(MODELS)
    print(f"224 px, batch {ns.batch}, {ns.batches} timed batches after a warm-up, {os.cpu_count()} CPU cores; "
          "random weights")
    print("| family | preset (smallest) | parameters | forward img/s | train img/s | fp32 file | int8 file | peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in families:
        row = run_stage(__file__, "measure", {"family": family, "batch": ns.batch, "batches": ns.batches,
                                              "work": ns.work})
        train = f"{row['train']:.1f}" if "train" in row else "-"
        files = (f"{row['fp32_mb']:.1f} MB", f"{row['int8_mb']:.1f} MB") if "fp32_mb" in row else ("-", "-")
        if "refused" in row:
            files = (f"refused ({row['refused']})",) * 2
        print(f"| {family} | {row['preset']} | {row['parameters'] / 1e6:.1f}M | {row['forward']:.1f} | {train} "
              f"| {files[0]} | {files[1]} | {row['peak_mb']:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
