"""Accuracy of every shipped recipe, the default, and the Keras guide's baseline, on datasets of different domains.

Run by hand (most of an hour on 2 cores), not in CI:

    python benchmarks/accuracy.py --weights ../shared/weights/mobilenetv2_dogs.weights.h5

Every run uses the same pretrained MobileNetV2 at 96 px, the same train/test
split per dataset (the test images never take part in training or model
choice) and 3 seeds (the validation split, initialisation, shuffling and
augmentation change with the seed). Datasets are built offline from what
scikit-learn and scikit-image ship:

- digits: scikit-learn's 1,797 handwritten digits (8x8, upscaled), 10 classes;
  far from ImageNet, and flips change a digit's meaning.
- faces: scikit-image's `lfw_subset`, 100 faces vs 100 non-face patches (25x25
  grey); small data.
- photos: tiles of 8 photographs bundled with scikit-image (astronaut,
  cat, coffee, rocket, ...), one class per photograph; natural photos. Each
  photograph is cut into non-overlapping 48 px tiles (at most 120 per
  photograph) and 30% of the tiles, chosen at random, are the test split,
  so no test pixel is ever seen in training.
- textures: tiles of scikit-image's brick, grass and gravel textures, split
  the same way.

It prints one table: mean +- sd over the seeds of test accuracy, macro F1,
expected calibration error (ECE) and wall time of the whole `tltool fit`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZE = 96
DATASETS = ("digits", "faces", "photos", "textures")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "stereo_motorcycle", "camera")
TEXTURES = ("brick", "grass", "gravel")


# ---------------------------------------------------------------- datasets


def _save(root: str, split: str, label: str, i: int, pixels: np.ndarray) -> None:
    from PIL import Image

    folder = os.path.join(root, split, label)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(pixels).save(os.path.join(folder, f"{label}_{i:04d}.png"))


def _stratified_test(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A boolean mask of test items: `fraction` of each class, chosen once with a fixed seed."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: round(fraction * len(members))]] = True
    return test


def build_digits(root: str) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    test = _stratified_test(digits.target, 0.25)
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        gray = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(gray).resize((SIZE, SIZE), Image.BICUBIC))
        _save(root, "test" if test[i] else "train", f"digit{target}", i, big)


def build_faces(root: str) -> None:
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces, then 100 non-faces, floats 0-1, 25x25
    labels = np.array([0] * 100 + [1] * 100)
    test = _stratified_test(labels, 0.4)
    for i, (image, label) in enumerate(zip(images, labels)):
        _save(root, "test" if test[i] else "train", ("face", "other")[label], i,
              np.clip(image * 255, 0, 255).astype(np.uint8))


def _tiles(root: str, images: dict[str, np.ndarray], side: int = 48, most: int = 120, seed: int = 0) -> None:
    """Non-overlapping side x side tiles of each image (at most `most`), 30% of them at random for test."""
    rng = np.random.default_rng(seed)
    for label, image in images.items():
        height, width = image.shape[:2]
        corners = [(y, x) for y in range(0, height - side + 1, side) for x in range(0, width - side + 1, side)]
        chosen = rng.permutation(len(corners))[:most]
        test = set(chosen[: round(0.3 * len(chosen))].tolist())
        for i in chosen:
            y, x = corners[i]
            _save(root, "test" if i in test else "train", label, int(i), image[y:y + side, x:x + side])


def build_photos(root: str) -> None:
    import skimage.data

    images = {}
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        images[name] = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    _tiles(root, images)


def build_textures(root: str) -> None:
    import skimage.data

    _tiles(root, {name: getattr(skimage.data, name)() for name in TEXTURES}, seed=1)


def dataset(name: str, work: str) -> str:
    root = os.path.join(work, "data", name)
    marker = os.path.join(root, ".built")
    if not os.path.exists(marker):
        globals()[f"build_{name}"](root)
        open(marker, "w").close()
    return root


# ---------------------------------------------------------------- runs


def run_recipe(data: str, recipe: str, seed: int, weights: str, out: str) -> dict:
    """One `tltool fit` in a fresh process; its test figures and wall time."""
    command = [sys.executable, "-m", "tltool", "fit", data, "--backbone", "mobilenetv2", "--weights", weights,
               "--image-size", str(SIZE), "--recipe", recipe, "--seed", str(seed), "--out", out, "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["split"] == "test", metrics["split"]
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "ece": metrics["expected_calibration_error"], "seconds": seconds}


KERAS_GUIDE = r"""
import json, os, sys, time
start = time.perf_counter()
import numpy as np
import keras
from tltool.data.contract import prepare_file
from tltool.data.dataset import load_dataset
from tltool.evaluation.metrics import evaluate_probs
data, seed, weights, size, epochs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
keras.utils.set_random_seed(seed)
ds = load_dataset(data, 0.2, 0.0, seed, progress=False)
def arrays(split):
    samples = ds.split(split)
    x = np.stack([prepare_file(s.path, size, "stretch") for s in samples]).astype("float32")
    return x, np.array([ds.classes.index(s.label) for s in samples])
(xt, yt), (xv, yv), (xs, ys) = arrays("train"), arrays("val"), arrays("test")
base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
base.load_weights(weights)
base.trainable = False
inputs = keras.Input((size, size, 3))
x = keras.applications.mobilenet_v2.preprocess_input(inputs)
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.2)(x)
outputs = keras.layers.Dense(len(ds.classes), activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(xt, yt, validation_data=(xv, yv), epochs=epochs, batch_size=32, verbose=0)
e = evaluate_probs(ys, model.predict(xs, verbose=0), ds.classes)
print(json.dumps({"accuracy": e.metrics["accuracy"], "macro_f1": e.metrics["macro_f1"],
                  "ece": e.metrics["expected_calibration_error"], "seconds": time.perf_counter() - start}))
"""


def run_keras_guide(data: str, seed: int, weights: str, epochs: int = 10) -> dict:
    """The Keras transfer-learning guide: frozen base, a new head, 10 epochs of Adam, no augmentation."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", KERAS_GUIDE, data, str(seed), weights, str(SIZE), str(epochs)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    if done.returncode != 0:
        raise RuntimeError(f"keras guide failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- table


def summarise(results: dict) -> str:
    from common import markdown_table

    rows = []
    for (name, recipe), runs in results.items():
        cells = []
        for key, scale, digits in (("accuracy", 100, 1), ("macro_f1", 100, 1), ("ece", 1, 3), ("seconds", 1, 0)):
            values = np.array([r[key] for r in runs]) * scale
            sd = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.{digits}f}{sd}")
        rows.append([name, recipe, len(runs), *cells])
    return markdown_table(["dataset", "recipe", "seeds", "test accuracy (%)", "macro F1 (%)", "ECE", "fit time (s)"],
                          rows)


def main() -> None:
    from tltool.recipe import DEFAULT_RECIPE, shipped_recipes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the pretrained MobileNetV2 weights file")
    parser.add_argument("--work", default="/tmp/tltool-accuracy", help="datasets and runs go here")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--recipes", default="all", help="comma-separated recipe names or files, keras-guide, or all")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds run from this one (to add seeds to a table)")
    parser.add_argument("--json", help="also write every result to this file")
    args = parser.parse_args()
    weights = os.path.abspath(args.weights)
    recipes = ([*shipped_recipes(), "keras-guide"] if args.recipes == "all" else args.recipes.split(","))
    results: dict[tuple[str, str], list[dict]] = {}
    for name in args.datasets.split(","):
        data = dataset(name, args.work)
        for recipe in recipes:
            label = f"{recipe} (default)" if recipe == DEFAULT_RECIPE else recipe
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if recipe == "keras-guide":
                    result = run_keras_guide(data, seed, weights)
                else:
                    out = os.path.join(args.work, "runs", f"{name}-{os.path.basename(recipe)}-{seed}")
                    result = run_recipe(data, recipe, seed, weights, out)
                results.setdefault((name, label), []).append(result)
                print(f"{name} {label} seed {seed}: accuracy {result['accuracy']:.4f}, ece {result['ece']:.3f}, "
                      f"{result['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(summarise(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({f"{k[0]}|{k[1]}": v for k, v in results.items()}, f, indent=2)


if __name__ == "__main__":
    main()
