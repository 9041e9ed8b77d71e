"""Explanation benchmark (issue 22): the pointing game for `tltool explain` on real pixels.

The set: scikit-learn's handwritten digits (8 x 8, scaled to 40 x 40: a box
of 9.8% of the image), each pasted at a random place, as ink of a random
dark colour, on a 128 x 128 crop of one of scikit-learn's two sample photos
(a Chinese temple and a flower, 427 x 640), rescaled at random and softened;
the class is the digit. Pre-split folders: 200 train, 30 val and 30 test
images per digit, each split drawn from its own handwritten samples.

The model: `tltool fit` with the default recipe on the real pretrained
MobileNetV2 of ../shared/weights at 128 px. Then `tltool explain` on the
test folder gives each image's heatmap peak (`explanations.csv`).

It prints, over the correctly classified test images, the share whose peak
falls inside the digit's box, and within 15 px of it (the pointing game of
Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
counts a hit within 15 px), beside two baselines:
the image's centre, and a uniformly random point (the mean over 100 draws).
Both baselines score about the box's share of the image. It writes one
picture of overlays, `explain_examples.png`, into the work folder.

    python benchmarks/explain.py [--work DIR] [--weights FILE] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "..", "..", "shared", "weights", "mobilenetv2_dogs.weights.h5")
SIZE, GLYPH = 128, 40
PER_CLASS = {"train": 200, "val": 30, "test": 30}
POOL = {"train": (0, 120), "val": (120, 150), "test": (150, 180)}  # each split its own handwritten samples


def make_set(folder: str, seed: int = 0) -> str:
    """The pre-split folders, and boxes.json beside them ({path below `folder`: [x0, y0, x1, y1] in pixels});
    reused when there."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    boxes_file = boxes_path(folder)
    if os.path.isfile(boxes_file):
        return folder
    rng = np.random.default_rng(seed)
    digits, photos = load_digits(), load_sample_images().images
    by_class = {c: rng.permutation(np.flatnonzero(digits.target == c)) for c in range(10)}
    boxes = {}
    for split, count in PER_CLASS.items():
        for c in range(10):
            os.makedirs(os.path.join(folder, split, str(c)), exist_ok=True)
            for k in range(count):
                low, high = POOL[split]
                j = by_class[c][low + k % (min(high, len(by_class[c])) - low)]
                canvas = _background(photos[int(rng.integers(len(photos)))], rng)
                glyph = np.asarray(Image.fromarray((digits.images[j] * 16).astype(np.uint8)).resize(
                    (GLYPH, GLYPH), Image.Resampling.BILINEAR), np.float32)[..., None] / 255
                x, y = (int(v) for v in rng.integers(0, SIZE - GLYPH + 1, 2))
                ink = rng.uniform(0, 50, 3)
                patch = canvas[y:y + GLYPH, x:x + GLYPH]
                canvas[y:y + GLYPH, x:x + GLYPH] = (1 - glyph) * patch + glyph * ink
                rel = os.path.join(split, str(c), f"{split}_{c}_{k:03d}.png")
                Image.fromarray(canvas.round().astype(np.uint8)).save(os.path.join(folder, rel))
                boxes[rel] = [x, y, x + GLYPH, y + GLYPH]
    with open(boxes_file, "w") as f:
        json.dump(boxes, f)
    return folder


def boxes_path(folder: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(folder)), "boxes.json")


def _background(photo: np.ndarray, rng) -> np.ndarray:
    """A random square crop of the photo, 128-400 px, scaled to 128 x 128, softened (a 2 px blur, 40% of
    its contrast, brighter) so that dark ink stands out as ink on a printed photo would."""
    from PIL import Image, ImageFilter

    side = int(rng.integers(SIZE, min(photo.shape[:2]) + 1))
    top, left = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return 0.4 * np.asarray(crop.filter(ImageFilter.GaussianBlur(2)), np.float32) + 140


def pointing(rows, boxes: dict, data: str, tolerance: float = 0.0, seed: int = 0) -> dict:
    """The share of rows whose peak, the centre and a random point fall inside the image's box, or within
    `tolerance` pixels of it."""
    rng = np.random.default_rng(seed)
    hits = {"Grad-CAM peak": [], "image centre": [], "random point": []}
    for _, row in rows.iterrows():
        x0, y0, x1, y1 = boxes[os.path.relpath(row["path"], data)]
        box = [(x0 - tolerance) / SIZE, (y0 - tolerance) / SIZE, (x1 + tolerance) / SIZE, (y1 + tolerance) / SIZE]
        hits["Grad-CAM peak"].append(not np.isnan(row["peak_x"]) and _inside(row["peak_x"], row["peak_y"], box))
        hits["image centre"].append(_inside(0.5, 0.5, box))
        hits["random point"].append(np.mean([_inside(*rng.uniform(0, 1, 2), box) for _ in range(100)]))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def _inside(x: float, y: float, box: list[float]) -> bool:
    return bool(box[0] <= x <= box[2] and box[1] <= y <= box[3])


def examples_png(folder: str, overlays: list[str], path: str) -> None:
    """Eight overlays side by side."""
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(16, 2.4))
    for ax, name in zip(fig.subplots(1, len(overlays)), overlays):
        ax.imshow(Image.open(os.path.join(folder, name)))
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tltool-bench-explain"))
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not os.path.isfile(args.weights):
        sys.exit(f"{args.weights}: no such file; give the pretrained MobileNetV2 with --weights")
    import pandas as pd

    import tltool

    data = make_set(os.path.join(args.work, "data"))
    with open(boxes_path(data)) as f:
        boxes = json.load(f)
    run_dir = os.path.join(args.work, f"run-{args.seed}")
    if not os.path.isfile(os.path.join(run_dir, "model.keras")):
        tltool.fit(data, backbone="mobilenetv2", weights=args.weights, image_size=SIZE, seed=args.seed,
                   out=run_dir, overwrite=True, progress=False)
    accuracy = tltool.open_run(run_dir).metrics["accuracy"]
    explained = tltool.explain(run_dir, [os.path.join(data, "test")], overwrite=True, progress=False)
    rows = explained.rows
    truth = rows["path"].map(lambda p: os.path.basename(os.path.dirname(p)))
    correct = rows[truth == rows["class"]]
    table = pd.DataFrame({"inside the digit's box": pointing(correct, boxes, data),
                          "within 15 px of it": pointing(correct, boxes, data, tolerance=15)})
    print(f"test accuracy {accuracy:.4f}; {len(correct)} of {len(rows)} test images correctly classified\n")
    print(table.to_string(float_format="{:.3f}".format))
    picture = os.path.join(args.work, "explain_examples.png")
    examples_png(explained.folder, list(correct["overlay"].iloc[::max(1, len(correct) // 8)][:8]), picture)
    print(f"\nexamples: {picture}")


if __name__ == "__main__":
    main()
