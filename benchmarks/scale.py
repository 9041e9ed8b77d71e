"""How scanning and a frozen-backbone phase grow with the number of images.

Run by hand (about 15 minutes on 2 cores, 1.5 GB of disk):

    python benchmarks/scale.py --sizes 10000,50000,100000

Generates small JPEGs (64 x 48, 10 classes) and, for each dataset size, in a
fresh process: scans and checks every file (time, files/s, peak memory), then
runs a frozen MobileNetV2 (random weights, 32 px) over every image once to
cache its features (first epoch: decode + backbone) and trains the head for
one epoch on them (a cached epoch). Time should grow linearly with the count
and memory stay flat apart from the index itself.
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

STAGE = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[3])
data, cache = sys.argv[1], sys.argv[2]
start = time.perf_counter()
from tltool.data.dataset import load_dataset
dataset = load_dataset(data, 0.1, 0.0, 1, progress=False)
scan = time.perf_counter() - start
scan_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from tltool.models.registry import get_backbone
from tltool.recipe import recipe_from_dict
from tltool.runs.run import Run
from tltool.tasks import get_task
from tltool.training.session import Session
from tltool.training.setup import prepare
recipe = recipe_from_dict({"backbone": "mobilenetv2", "weights": "none", "image_size": 32, "batch_size": 128,
                           "augment": {"flip": "none"}, "early_stopping": None, "calibrate": False,
                           "data": {"cache": cache},
                           "phases": [{"name": "head", "epochs": 1, "trainable": "none"}]})
run = Run.create(os.path.join(os.path.dirname(data), "run-" + os.path.basename(data)), overwrite=True)
session = Session(prepare(recipe, get_backbone("mobilenetv2"), dataset, get_task()), run)
t = time.perf_counter()
session.enter_phase(0)
first = time.perf_counter() - t
model = session.model_for(True)
session.compile_phase(model, 0)
t = time.perf_counter()
session.fit_epoch(model, 0, 0, True)
cached = time.perf_counter() - t
print(json.dumps({"files": len(dataset.samples), "scan_s": scan, "scan_rss_mb": scan_rss,
                  "train": session.n_train + session.n_val, "first_epoch_s": first, "cached_epoch_s": cached,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(folder: str, n: int) -> str:
    """n JPEGs of 64 x 48 in 10 class folders (reused when already there)."""
    from PIL import Image

    marker = os.path.join(folder, f".generated-{n}")
    if os.path.exists(marker):
        return folder
    rng = np.random.default_rng(n)
    base = rng.integers(0, 255, (10, 3))
    for i in range(n):
        c = i % 10
        pixels = np.clip(base[c] + rng.normal(0, 25, (48, 64, 3)), 0, 255).astype(np.uint8)
        target = os.path.join(folder, f"class_{c}")
        os.makedirs(target, exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(target, f"{i:06d}.jpg"), quality=85)
    open(marker, "w").close()
    return folder


def measure(folder: str, cache: str) -> dict:
    env = {**os.environ, "TLTOOL_CACHE_DIR": os.path.join(folder, ".check-cache")}  # a cold file-check cache
    done = subprocess.run([sys.executable, "-c", STAGE, folder, cache, os.path.dirname(HERE)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from common import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--work", default="/tmp/tltool-scale")
    parser.add_argument("--cache", default="auto", help="data.cache for the decoded images: auto, memory, disk")
    args = parser.parse_args()
    rows = []
    for n in map(int, args.sizes.split(",")):
        start = time.perf_counter()
        folder = generate(os.path.join(args.work, f"jpegs-{n}"), n)
        made = time.perf_counter() - start
        r = measure(folder, args.cache)
        rows.append([f"{r['files']:,}", f"{made:.0f}", f"{r['scan_s']:.1f}", f"{r['files'] / r['scan_s']:,.0f}",
                     f"{r['scan_rss_mb']:,.0f}", f"{r['train'] / r['first_epoch_s']:,.0f}",
                     f"{r['train'] / r['cached_epoch_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    print(markdown_table(["images", "generated (s)", "scan + check (s)", "files/s", "peak MB after scan",
                          "first epoch img/s", "cached epoch img/s", "peak MB"], rows))


if __name__ == "__main__":
    main()
