"""Multi-label benchmark (issue 21): tltool's default recipe against a plain-Keras peer, on real pixels.

The set: 1,500 canvases of 96 x 96 px, each holding 0 to 3 of scikit-learn's
handwritten digits (8 x 8, scaled to 40 x 40, each in its own cell of a 2 x 2
grid with a random offset, ink of a random dark colour on a noisy
paper-coloured ground); the labels are the digits present (10 classes). A
seeded split: 1,000 train, 250 val, 250 test.

Both start from the real pretrained MobileNetV2 of ../shared/weights at 96 px:

- tltool: `tltool fit data.csv -b mobilenetv2 --weights W --image-size 96`
  with the default recipe (its figures: the run's metrics.json, on test);
- the peer, as the Keras transfer-learning guide would do it: the backbone
  frozen, global average pooling, a sigmoid Dense head, Adam 1e-3, binary
  cross-entropy, 10 epochs, a threshold of 0.5 for every class.

It prints mAP (macro over classes), micro-F1 and exact match on the test
split for 3 seeds (the training seed; the data stay the same).

    python benchmarks/multilabel.py [--work DIR] [--weights FILE] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "..", "..", "shared", "weights", "mobilenetv2_dogs.weights.h5")
SIZE, GLYPH, IMAGES, SPLITS = 96, 40, 1500, (1000, 250, 250)


def make_set(folder: str, seed: int = 0) -> str:
    """The canvases and data.csv (path,labels,split); reused when already there."""
    from PIL import Image
    from sklearn.datasets import load_digits

    csv = os.path.join(folder, "data.csv")
    if os.path.isfile(csv):
        return csv
    os.makedirs(folder, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    splits = np.array(["train"] * SPLITS[0] + ["val"] * SPLITS[1] + ["test"] * SPLITS[2])[rng.permutation(IMAGES)]
    rows = ["path,labels,split"]
    for i in range(IMAGES):
        canvas = np.clip(rng.normal(225, 10, (SIZE, SIZE, 3)) * rng.uniform(0.85, 1.0, 3), 0, 255)
        labels = set()
        for cell in rng.permutation(4)[:int(rng.integers(0, 4))]:  # distinct cells of a 2 x 2 grid
            j = int(rng.integers(len(digits.images)))
            glyph = np.asarray(Image.fromarray((digits.images[j] * 16).astype(np.uint8)).resize((GLYPH, GLYPH)),
                               np.float32) / 255
            dy, dx = (int(v) for v in rng.integers(0, SIZE // 2 - GLYPH + 1, 2))  # jitter inside the cell
            y, x = cell // 2 * SIZE // 2 + dy, cell % 2 * SIZE // 2 + dx
            ink = rng.uniform(0, 90, 3)
            region = canvas[y:y + GLYPH, x:x + GLYPH]
            canvas[y:y + GLYPH, x:x + GLYPH] = region * (1 - glyph[..., None]) + ink * glyph[..., None]
            labels.add(str(digits.target[j]))
        name = f"canvas_{i:04d}.png"
        Image.fromarray(canvas.astype(np.uint8)).save(os.path.join(folder, name))
        rows.append(f"{name},{' '.join(sorted(labels))},{splits[i]}")
    with open(csv, "w") as f:
        f.write("\n".join(rows) + "\n")
    return csv


PEER = r"""
import json, os, sys
import numpy as np, pandas as pd, keras
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score
csv, weights, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
keras.utils.set_random_seed(seed)
table = pd.read_csv(csv, dtype=str, keep_default_na=False)
classes = sorted({n for cell in table["labels"] for n in cell.split()})
def load(split):
    rows = table[table["split"] == split]
    x = np.stack([np.asarray(Image.open(os.path.join(os.path.dirname(csv), p)).convert("RGB"), np.float32)
                  for p in rows["path"]])
    y = np.array([[float(c in cell.split()) for c in classes] for cell in rows["labels"]], np.float32)
    return keras.applications.mobilenet_v2.preprocess_input(x), y
(xt, yt), (xv, yv), (xs, ys) = load("train"), load("val"), load("test")
base = keras.applications.MobileNetV2(input_shape=xt.shape[1:], include_top=False, weights=None)
base.load_weights(weights)
base.trainable = False
inputs = keras.Input(xt.shape[1:])
outputs = keras.layers.Dense(len(classes), activation="sigmoid")(
    keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)))
model = keras.Model(inputs, outputs)
model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
model.fit(xt, yt, validation_data=(xv, yv), epochs=10, batch_size=32, verbose=0)
p = model.predict(xs, verbose=0)
d = (p >= 0.5).astype(int)
present = ys.sum(0) > 0
print(json.dumps({"mean_average_precision": float(np.mean([average_precision_score(ys[:, c], p[:, c])
                                                           for c in range(len(classes)) if present[c]])),
                  "micro_f1": float(f1_score(ys, d, average="micro", zero_division=0)),
                  "exact_match": float((d == ys).all(1).mean())}))
"""


def tltool_run(csv: str, weights: str, seed: int, work: str) -> dict:
    out = os.path.join(work, f"run-{seed}")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "tltool"), "fit", csv, "-b", "mobilenetv2",
                           "--weights", weights, "--image-size", str(SIZE), "--seed", str(seed), "--out", out,
                           "--overwrite"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return {k: metrics[k] for k in ("mean_average_precision", "micro_f1", "exact_match")}


def peer_run(csv: str, weights: str, seed: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PEER, csv, weights, str(seed)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tltool-multilabel"))
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--seeds", default="1,2,3")
    ns = parser.parse_args()
    csv = make_set(os.path.join(ns.work, "canvases"))
    print(f"{IMAGES} canvases of {SIZE} px with 0-3 digits (train/val/test {SPLITS}); test-split figures")
    print("| seed | tltool mAP | peer mAP | tltool micro-F1 | peer micro-F1 | tltool exact match | peer exact match |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for seed in (int(s) for s in ns.seeds.split(",")):
        ours, peer = tltool_run(csv, ns.weights, seed, ns.work), peer_run(csv, ns.weights, seed)
        print(f"| {seed} | {ours['mean_average_precision']:.4f} | {peer['mean_average_precision']:.4f} | "
              f"{ours['micro_f1']:.4f} | {peer['micro_f1']:.4f} | {ours['exact_match']:.4f} | "
              f"{peer['exact_match']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
