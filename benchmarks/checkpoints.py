"""What checkpointing costs, and a whole `tltool fit` against the Keras guide's script.

Run by hand:

    python benchmarks/checkpoints.py --weights ../shared/weights/mobilenetv2_dogs.weights.h5

1. The whole `tltool fit` command (start to exit) of 20 head epochs on a
   frozen pretrained MobileNetV2 at 96 px (1,347 digit images, the
   accuracy benchmark's digits), against the Keras transfer-learning guide's
   script doing the same 20 epochs on the same split: wall time and test
   accuracy of each.
2. The cost of one epoch's checkpoint for MobileNetV2 and ResNet50 at
   224 px: in a frozen phase (the head and its optimizer) and in a phase that
   trains the whole backbone (plus the backbone and its optimizer state):
   seconds and MB written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HEAD_ONLY = """
name: head-20
augment: {flip: none}
phases:
  - {name: head, epochs: 20, trainable: none, optimizer: {name: adam, learning_rate: 1.0e-3}}
early_stopping: null
calibrate: false
"""


def fit_against_guide(weights: str, work: str) -> list[list]:
    import accuracy

    data = accuracy.dataset("digits", work)
    recipe = os.path.join(work, "head-20.yaml")
    with open(recipe, "w") as f:
        f.write(HEAD_ONLY)
    out = os.path.join(work, "runs", "head-20")
    tltool = accuracy.run_recipe(data, recipe, 1, weights, out)
    guide = accuracy.run_keras_guide(data, 1, weights, epochs=20)
    return [["tltool fit, 20 head epochs (start to exit)", f"{tltool['seconds']:.1f} s",
             f"{100 * tltool['accuracy']:.1f}%", f"{guide['seconds'] / tltool['seconds']:.2f}x faster"],
            ["Keras guide script, 20 head epochs", f"{guide['seconds']:.1f} s", f"{100 * guide['accuracy']:.1f}%", ""]]


def checkpoint_cost(backbone: str, size: int = 224) -> list[list]:
    import keras
    import numpy as np

    from tltool.models.classifier import build_classifier
    from tltool.models.freeze import apply_plan, resolve_plan
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head, Phase
    from tltool.training.checkpoint import Checkpoints, TrainingState
    from tltool.training.optim import make_optimizer

    spec = get_backbone(backbone)
    clf = build_classifier(spec.build(size, "none"), 10, size, Head(), Augment(), 1)
    rows = []
    for trainable in ("none", "all"):
        apply_plan(clf.backbone, resolve_plan(clf.backbone, trainable))
        model = clf.head if trainable == "none" else clf.inference
        phase = Phase(name="p", epochs=1, trainable=trainable)
        optimizer = make_optimizer(phase, 1)
        optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory() as folder:
            checkpoints = Checkpoints(folder, clf)
            state = TrainingState()
            checkpoints.save_start(state)
            times, sizes = [], []
            for epoch in range(1, 4):
                before = _bytes(folder)
                state.epoch = epoch
                if trainable == "all":
                    state.backbone_version = epoch
                start = time.perf_counter()
                checkpoints.save_epoch(state, optimizer, improved_phase=True, improved_run=True)
                times.append(time.perf_counter() - start)
                sizes.append(_written(folder, before))
            what = "frozen phase (head + optimizer)" if trainable == "none" else "whole backbone trains"
            rows.append([f"{backbone} {size} px", what, f"{np.median(times):.3f} s", f"{np.median(sizes) / 2**20:.2f} MB"])
    keras.backend.clear_session()
    return rows


def _bytes(folder: str) -> dict:
    return {n: os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)}


def _written(folder: str, before: dict) -> int:
    """Bytes of the files that are new since `before` (files are never rewritten in place)."""
    return sum(size for name, size in _bytes(folder).items() if name not in before or name.startswith("state"))


def main() -> None:
    from common import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the pretrained MobileNetV2 weights file")
    parser.add_argument("--work", default="/tmp/tltool-accuracy")
    args = parser.parse_args()
    print(markdown_table(["what", "wall time", "test accuracy", "compared"],
                        fit_against_guide(os.path.abspath(args.weights), args.work)))
    print()
    rows = [row for name in ("mobilenetv2", "resnet50") for row in checkpoint_cost(name)]
    print(markdown_table(["backbone", "epoch of", "checkpoint time", "written"], rows))


if __name__ == "__main__":
    main()
