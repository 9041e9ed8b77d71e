"""Input pipeline benchmark: can tltool's tf.data pipeline keep a frozen backbone busy?

Generates a few thousand JPEGs (320x240), then measures, each in a fresh
process (so each peak memory is its own):

- the pipeline alone (decode, resize, batch): first epoch, and a later epoch
  served from the cache;
- the backbone's forward pass on tensors already in memory (the limit);
- the pipeline feeding that backbone, for each cache policy: memory, disk,
  none (streaming);
and prints images/second, the ratio to the in-memory limit and peak memory.

    python benchmarks/input_pipeline.py [--images 2000] [--backbone mobilenetv2] [--size 224]
"""

from __future__ import annotations

import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks.common import (  # noqa: E402
    machine,
    make_jpegs,
    parse_args,
    peak_rss_mb,
    print_table,
    run_if_stage,
    run_stage,
)


def _pipeline(args, cache):
    import tensorflow as tf

    from tltool.data.pipeline import labelled_images, shuffle_window, to_batches

    folder = args["data"]
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".jpg"))
    labels = [int(os.path.basename(os.path.dirname(p)).split("_")[1]) for p in paths]
    images = labelled_images(paths, labels, args["size"], "stretch", cache)
    window = shuffle_window(len(paths), args["size"])
    return len(paths), to_batches(images, lambda y: tf.one_hot(y, 5), args["batch"], shuffle_seed=1, window=window)


def _backbone(args):
    import tensorflow as tf

    from tltool.models.registry import get_backbone

    backbone = get_backbone(args["backbone"]).build(args["size"], "none")
    return tf.function(lambda x: backbone.model(backbone.preprocess(x), training=False))


def _epoch(batches, step=None) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    for x, _ in batches:
        if step is not None:
            step(x).numpy()
        else:
            x.numpy()
        count += int(x.shape[0])
    return count, time.perf_counter() - start


def stage_pipeline(args):
    n, batches = _pipeline(args, "")
    first = _epoch(batches)
    second = _epoch(batches)
    return {"first": first[0] / first[1], "cached": second[0] / second[1], "rss": peak_rss_mb()}


def stage_memory_limit(args):
    import numpy as np

    step = _backbone(args)
    x = np.random.default_rng(0).uniform(0, 255, (args["batch"], args["size"], args["size"], 3)).astype("float32")
    import tensorflow as tf

    x = tf.constant(x)
    for _ in range(3):
        step(x).numpy()  # trace and warm up
    batches = max(10, args["images"] // args["batch"] // 2)
    start = time.perf_counter()
    for _ in range(batches):
        step(x).numpy()
    return {"rate": batches * args["batch"] / (time.perf_counter() - start), "rss": peak_rss_mb()}


def stage_fed(args):
    cache = {"memory": "", "none": None}.get(args["cache"], os.path.join(args["work"], f"disk-{time.time()}"))
    import tensorflow as tf

    step = _backbone(args)
    n, batches = _pipeline(args, cache)
    # Trace outside the timing on a constant: pulling a batch from the dataset
    # would fill most of the shuffle window and leave the cache half-written.
    step(tf.zeros((args["batch"], args["size"], args["size"], 3))).numpy()
    first = _epoch(batches, step)
    second = _epoch(batches, step)
    for leftover in glob.glob(cache + "*") if cache else []:
        os.remove(leftover)
    return {"first": first[0] / first[1], "cached": second[0] / second[1], "rss": peak_rss_mb()}


STAGES = {"pipeline": stage_pipeline, "limit": stage_memory_limit, "fed": stage_fed}


def main():
    ns = parse_args(__doc__, [(("--backbone",), {"default": "mobilenetv2"})])
    if run_if_stage(ns, STAGES):
        return
    data = make_jpegs(os.path.join(ns.work, f"jpegs-{ns.images}"), ns.images)
    args = {"data": data, "images": ns.images, "backbone": ns.backbone, "size": ns.size, "batch": ns.batch,
            "work": ns.work}
    print(f"input pipeline: {ns.images} JPEGs 320x240 -> {ns.size}px, batch {ns.batch}, {ns.backbone} "
          f"(frozen, forward pass); {machine()}\n")
    pipe = run_stage(__file__, "pipeline", args)
    limit = run_stage(__file__, "limit", args)
    rows = [
        ["pipeline alone, first epoch (decode)", f"{pipe['first']:.0f}", "", f"{pipe['rss']:.0f}"],
        ["pipeline alone, cached epoch", f"{pipe['cached']:.0f}", "", ""],
        [f"{ns.backbone} on in-memory tensors (limit)", f"{limit['rate']:.1f}", "100%", f"{limit['rss']:.0f}"],
    ]
    for cache in ("memory", "disk", "none"):
        fed = run_stage(__file__, "fed", {**args, "cache": cache})
        label = {"none": "no cache (streaming)"}.get(cache, f"{cache} cache")
        rows.append([f"pipeline -> {ns.backbone}, {label}, first epoch", f"{fed['first']:.1f}",
                     f"{100 * fed['first'] / limit['rate']:.0f}%", f"{fed['rss']:.0f}"])
        rows.append([f"pipeline -> {ns.backbone}, {label}, later epoch", f"{fed['cached']:.1f}",
                     f"{100 * fed['cached'] / limit['rate']:.0f}%", ""])
    print_table(rows, ["measurement", "images/s", "of limit", "peak MiB"])


if __name__ == "__main__":
    main()
