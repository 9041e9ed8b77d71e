"""How `tltool inspect` and `tltool fit` grow with the number of images, timed as a user waits: from process start.

Run by hand (about 15 minutes on 2 cores, 1.5 GB of disk):

    python benchmarks/scale.py --sizes 10000,100000

Generates small JPEGs (64 x 48, 10 classes) and, for each dataset size:

1. `tltool inspect DATA` with a cold file-check cache: the scan and the check
   of every file (seconds, files/s, the process's peak memory);
2. `tltool fit DATA --recipe linear-probe --epochs 1 --image-size 32
   -b mobilenetv2 --weights none`, with the check cache now warm: seconds
   from process start to the phase line (set-up: scan, split, index,
   pipelines, model), to the epoch line (the first epoch: decoding, the
   frozen backbone over every image to cache features, one head epoch),
   to exit (calibration, export, evaluation of the validation split,
   report), and the process's peak memory.

Time should grow linearly with the count, and memory stay flat apart from the
index and the in-memory caches.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


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


def measure(folder: str, cache: str):
    """(`tltool inspect`, `tltool fit`) on `folder`, each a `common.Timed`."""
    from common import timed_command, tltool_command

    tltool = tltool_command()
    check_cache = os.path.join(os.path.dirname(folder), f".check-cache-{os.path.basename(folder)}")
    shutil.rmtree(check_cache, ignore_errors=True)  # a cold file-check cache for inspect
    env = {"TLTOOL_CACHE_DIR": check_cache}
    inspected = timed_command([tltool, "inspect", folder], env)
    recipe = "linear-probe"
    if cache != "auto":
        recipe = os.path.join(os.path.dirname(folder), f"linear-probe-{cache}.yaml")
        with open(os.path.join(HERE, "..", "recipes", "linear-probe.yaml")) as source, open(recipe, "w") as f:
            f.write(source.read() + f"data: {{cache: {cache}}}\n")
    run = os.path.join(os.path.dirname(folder), "run-" + os.path.basename(folder))
    fitted = timed_command([tltool, "fit", folder, "--recipe", recipe, "--epochs", "1", "--image-size", "32",
                            "-b", "mobilenetv2", "--weights", "none", "--batch-size", "128", "--out", run,
                            "--overwrite"], env, {"phase": "phase 1/1", "epoch": "epoch 1 ("})
    shutil.rmtree(run, ignore_errors=True)
    return inspected, fitted


def main() -> None:
    from common import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--work", default="/tmp/tltool-scale")
    parser.add_argument("--cache", default="auto", help="data.cache for the decoded images: auto, memory, disk")
    args = parser.parse_args()
    rows = []
    for n in map(int, args.sizes.split(",")):
        folder = generate(os.path.join(args.work, f"jpegs-{n}"), n)
        inspect, fit = measure(folder, args.cache)
        rows.append([f"{n:,}", f"{inspect.seconds:.1f}", f"{n / inspect.seconds:,.0f}", f"{inspect.peak_mb:,.0f}",
                     f"{fit.marks['phase']:.1f}", f"{fit.marks['epoch']:.1f}", f"{fit.seconds:.1f}",
                     f"{fit.peak_mb:,.0f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    print(markdown_table(["images", "inspect, cold (s)", "files/s", "inspect peak MB", "fit: to phase line (s)",
                          "fit: to epoch line (s)", "fit: whole command (s)", "fit peak MB"], rows))


if __name__ == "__main__":
    main()
