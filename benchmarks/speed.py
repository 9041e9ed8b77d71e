"""Speed benchmark (issue 6): where tltool's time goes, against the limits of this machine.

Stages, each in a fresh process so each peak memory is its own:

1. head phase, 10 epochs, on cached features vs. the Keras-guide way (the
   frozen backbone runs on every image in every epoch): wall time of the
   phase, validation accuracy, ratio;
2. fine-tune phase (every layer trains): images/s of `tltool fit`'s epochs
   vs. the same compiled model's `train_on_batch` on tensors in memory;
3. predict: images/s of `tltool predict`'s path (decode + model) vs. the
   model's forward pass on tensors in memory;
4. precision / XLA: train_on_batch images/s for float32, float32 with XLA,
   mixed_bfloat16 and mixed_float16 (without augmentation, which XLA cannot
   compile; tltool moves it into the pipeline under --jit-compile);
5. CLI start-up: `tltool --help` vs. `python -c pass`;
6. parity (`--parity`, with the real pretrained MobileNetV2 of
   ../shared/weights): 5 epochs that train every layer (BatchNorm frozen) at
   96 px on the 1,437 training digits of `tltool datasets example digits`,
   `tltool fit` as a subprocess against plain Keras `fit` on the same pixels
   decoded into memory; seconds per epoch and the whole command, each timed
   from process start.

There are no ImageNet weights offline, and a random backbone with frozen
BatchNorm gives near-constant features, so the benchmark first pretrains a
MobileNetV2 from scratch on one generated dataset (kept in --work for later
runs) and transfers it to another, as a user would with ImageNet weights.

    python benchmarks/speed.py [--images 2000] [--size 224] [--skip-precision]
    python benchmarks/speed.py --parity [--parity-weights FILE]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from benchmarks.common import (  # noqa: E402
    machine,
    make_jpegs,
    parse_args,
    peak_rss_mb,
    print_table,
    run_if_stage,
    run_stage,
    timed_command,
    tltool_command,
)

BACKBONE = "mobilenetv2"


def _recipe(path: str, phase: dict, views: int = 1, **extra) -> str:
    import yaml

    body = {"name": "bench", "phases": [phase], "early_stopping": None, "class_weight": "none",
            "augment": {"flip": "horizontal", "rotation": 0.05, "cached_views": views}, **extra}
    with open(path, "w") as f:
        yaml.safe_dump(body, f)
    return path


def stage_pretrain(args):
    """From-scratch MobileNetV2 on dataset A at 96 px; saves the backbone weights."""
    import keras

    import tltool
    import tltool.models.layers  # noqa: F401

    out = os.path.join(args["work"], "pretrain-run")
    shutil.rmtree(out, ignore_errors=True)
    tltool.fit(args["pretrain_data"], recipe="from-scratch", backbone=BACKBONE, image_size=96, epochs="4",
               out=out, progress=False)
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    model.get_layer("backbone").save_weights(args["weights"])
    return {"rss": peak_rss_mb()}


def _fit_phase(args, name, phase, views=1, **extra):
    """`tltool fit` of one phase, as a user runs it: (run, history, seconds caching features, metrics,
    seconds of the whole command from process start, its peak MiB)."""
    import pandas as pd

    out = os.path.join(args["work"], f"run-{name}")
    shutil.rmtree(out, ignore_errors=True)
    recipe = _recipe(os.path.join(args["work"], f"{name}.yaml"), phase, views, **extra)
    run = timed_command([tltool_command(), "fit", args["data"], "--recipe", recipe, "-b", BACKBONE,
                                          "--weights", args["weights"], "--image-size", str(args["size"]),
                                          "--out", out])
    history = pd.read_csv(os.path.join(out, "history.csv"))
    cached = re.search(r"cached \d+ features .* in ([\d.]+) s", run.output)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    return out, history, (float(cached.group(1)) if cached else 0.0), metrics, run.seconds, run.peak_mb


def stage_head(args):
    phase = {"name": "head", "epochs": 10, "trainable": "none", "optimizer": {"name": "adam", "learning_rate": 1e-3}}
    name = f"head-cached-{args['views']}" if args["cache"] else "head-plain"
    _, history, cache_s, metrics, command, rss = _fit_phase(args, name, phase, args["views"],
                                                            cache_features=args["cache"])
    return {"seconds": cache_s + float(history["seconds"].sum()), "cache_seconds": cache_s,
            "val_accuracy": float(history["val_accuracy"].iloc[-1]), "accuracy": metrics["accuracy"],
            "command": command, "rss": rss}


def _in_memory_train_rate(args, precision="float32", jit=False, trainable="all", augment=True):
    import keras
    import numpy as np

    from tltool.models.classifier import build_classifier
    from tltool.models.freeze import apply_plan, resolve_plan
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head, Phase
    from tltool.training.optim import make_optimizer

    keras.config.set_dtype_policy(precision)
    spec = get_backbone(BACKBONE)
    backbone = spec.build(args["size"], args["weights"])
    clf = build_classifier(backbone, 5, args["size"], Head(), Augment(flip="horizontal", rotation=0.05))
    phase = Phase(name="ft", epochs=1, trainable=trainable)
    apply_plan(backbone, resolve_plan(backbone, trainable))
    model = clf.model if augment else clf.inference  # XLA cannot compile the augmentation layers
    model.compile(make_optimizer(phase, 50), keras.losses.CategoricalCrossentropy(), metrics=["accuracy"],
                  jit_compile=jit)
    if jit and not model.jit_compile:
        raise RuntimeError("Keras fell back from jit_compile")
    batch = args["batch"]
    x = np.random.default_rng(0).uniform(0, 255, (batch, args["size"], args["size"], 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(batch) % 5, 5)
    for _ in range(3):
        model.train_on_batch(x, y)
    steps = args["steps"]
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def stage_finetune(args):
    phase = {"name": "all", "epochs": 3, "trainable": "all", "optimizer": {"name": "adam", "learning_rate": 1e-5}}
    out, history, _, _, command, rss = _fit_phase(args, "finetune", phase, cache_features=False)
    n_train = int((json.load(open(os.path.join(out, "metrics.json")))["samples"]) * 4)  # val is 20%
    rates = [n_train / s for s in history["seconds"]]
    return {"first": rates[0], "later": max(rates[1:]), "command": command, "rss": rss}


def stage_finetune_limit(args):
    return {"rate": _in_memory_train_rate(args), "rss": peak_rss_mb()}


def stage_predict(args):
    """One call of the predict path, end to end (with its ~0.5 s of pipeline
    set-up), then a second call timed from its first batch on (steady state)."""
    import glob

    import numpy as np
    import tensorflow as tf

    from tltool.data.pipeline import decode_dataset, finish
    from tltool.serving.loading import load_trained

    model = load_trained(os.path.join(args["work"], "run-finetune"))
    paths = sorted(glob.glob(os.path.join(args["data"], "*", "*.jpg")))
    model.probabilities(paths[:64], args["batch"])  # trace the model outside the timing
    start = time.perf_counter()
    model.probabilities(paths, args["batch"])
    end_to_end = len(paths) / (time.perf_counter() - start)
    batches = finish(decode_dataset(paths, model.image_size, model.aspect, ordered=False)
                     .batch(args["batch"]).prefetch(tf.data.AUTOTUNE))
    count, start = 0, None
    for images, _ in batches:
        np.asarray(model.forward(tf.cast(images, tf.float32)))
        if start is None:
            start = time.perf_counter()
        else:
            count += int(images.shape[0])
    return {"rate": end_to_end, "steady": count / (time.perf_counter() - start), "rss": peak_rss_mb()}


def stage_predict_limit(args):
    import numpy as np
    import tensorflow as tf

    from tltool.serving.loading import load_trained

    model = load_trained(os.path.join(args["work"], "run-finetune"))
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args["batch"], args["size"], args["size"], 3)),
                    tf.float32)
    for _ in range(3):
        np.asarray(model.forward(x))
    steps = max(10, args["images"] // args["batch"])
    start = time.perf_counter()
    for _ in range(steps):
        np.asarray(model.forward(x))
    return {"rate": steps * args["batch"] / (time.perf_counter() - start), "rss": peak_rss_mb()}


def stage_precision(args):
    return {"rate": _in_memory_train_rate(args, args["precision"], args["jit"], augment=False), "rss": peak_rss_mb()}


PARITY_RECIPE = """
name: parity
augment: {flip: none}
head: {dropout: 0.0}
batch_size: 32
phases:
  - {name: all, epochs: 5, trainable: all, batchnorm: frozen, optimizer: {name: adam, learning_rate: 1.0e-4}}
early_stopping: null
class_weight: none
calibrate: false
"""

PLAIN_KERAS = r"""
import sys, time
start = time.perf_counter()
import json, os
import numpy as np
import keras
from tltool.data.contract import prepare_file
from tltool.data.dataset import load_dataset

data, weights, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
dataset = load_dataset(data, 0.2, 0.0, 0, progress=False)
classes = dataset.classes
def arrays(split):
    samples = dataset.split(split)
    x = np.stack([prepare_file(s.path, size, "stretch") for s in samples]).astype("float32")
    return x, keras.utils.to_categorical([classes.index(s.label) for s in samples], len(classes))
(x, y), (vx, vy) = arrays("train"), arrays("val")
backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
backbone.load_weights(weights)
for layer in backbone.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.trainable = False
inputs = keras.Input((size, size, 3))
features = keras.layers.GlobalAveragePooling2D()(backbone(keras.applications.mobilenet_v2.preprocess_input(inputs)))
model = keras.Model(inputs, keras.layers.Dense(len(classes), activation="softmax")(features))
model.compile(keras.optimizers.Adam(1e-4), "categorical_crossentropy", metrics=["accuracy"])
seconds = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.t)
history = model.fit(x, y, batch_size=32, epochs=5, validation_data=(vx, vy), verbose=0, callbacks=[Clock()])
print(json.dumps({"seconds": seconds, "val_accuracy": history.history["val_accuracy"][-1],
                  "total": time.perf_counter() - start, "images": len(x)}))
"""


def parity(work: str, weights: str) -> list[list]:
    """Rows: tltool fit's epochs that train the backbone against plain Keras fit on in-memory pixels."""
    import pandas as pd

    tltool = tltool_command()
    digits = os.path.join(work, "digits")
    if not os.path.isdir(digits):
        subprocess.run([tltool, "datasets", "example", "digits", digits], check=True, capture_output=True)
    recipe = os.path.join(work, "parity.yaml")
    with open(recipe, "w") as f:
        f.write(PARITY_RECIPE)
    out = os.path.join(work, "run-parity")
    shutil.rmtree(out, ignore_errors=True)
    ours = timed_command([tltool, "fit", digits, "--recipe", recipe, "-b", BACKBONE, "--weights", weights,
                                   "--image-size", "96", "--out", out])
    history = pd.read_csv(os.path.join(out, "history.csv"))
    keras = timed_command([sys.executable, "-c", PLAIN_KERAS, digits, weights, "96"],
                                         env={"PYTHONPATH": os.path.join(HERE, "..")})
    plain = json.loads(keras.output.strip().splitlines()[-1])

    def spread(values):
        return f"first {values[0]:.1f} s, then {min(values[1:]):.1f}-{max(values[1:]):.1f} s"

    return [[f"5 epochs training every layer (BatchNorm frozen), 96 px, {plain['images']} digits: tltool fit",
             spread(history["seconds"].tolist()), f"val acc {history['val_accuracy'].iloc[-1]:.3f}",
             f"whole command {ours.seconds:.0f} s", ""],
            ["the same in plain Keras fit on in-memory pixels", spread(plain["seconds"]),
             f"val acc {plain['val_accuracy']:.3f}", f"whole command {keras.seconds:.0f} s", ""]]


STAGES = {"pretrain": stage_pretrain, "head": stage_head, "finetune": stage_finetune,
          "finetune_limit": stage_finetune_limit, "predict": stage_predict, "predict_limit": stage_predict_limit,
          "precision": stage_precision}


def cli_startup(repeats: int = 7) -> tuple[float, float]:
    tltool = shutil.which("tltool") or os.path.join(os.path.dirname(sys.executable), "tltool")

    def median(cmd):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return median([tltool, "--help"]), median([sys.executable, "-c", "pass"])


def _against_limit(measured: list[tuple[str, float]], rss: float, limit_label: str, limit: dict) -> list[list]:
    """Table rows for rates measured through tltool, then the in-memory limit they are compared with."""
    rows = [[label, f"{rate:.1f} img/s", "", f"{100 * rate / limit['rate']:.0f}% of limit",
             f"{rss:.0f}" if i == 0 else ""] for i, (label, rate) in enumerate(measured)]
    rows.append([limit_label, f"{limit['rate']:.1f} img/s", "", "limit", f"{limit['rss']:.0f}"])
    return rows


def main():
    shared = os.path.join(HERE, "..", "..", "shared", "weights", "mobilenetv2_dogs.weights.h5")
    ns = parse_args(__doc__, [(("--skip-precision",), {"action": "store_true"}),
                              (("--parity",), {"action": "store_true", "help": "only the parity comparison"}),
                              (("--parity-weights",), {"default": shared})])
    if run_if_stage(ns, STAGES):
        return
    os.makedirs(ns.work, exist_ok=True)
    if ns.parity:
        print(f"parity: pretrained {BACKBONE} ({ns.parity_weights}); {machine()}\n")
        print_table(parity(ns.work, ns.parity_weights), ["measurement", "per epoch", "accuracy", "comparison", ""])
        return
    args = {"work": ns.work, "images": ns.images, "size": ns.size, "batch": ns.batch, "steps": 20,
            "data": make_jpegs(os.path.join(ns.work, f"transfer-{ns.images}"), ns.images, seed=1),
            "pretrain_data": make_jpegs(os.path.join(ns.work, f"jpegs-{ns.images}"), ns.images, seed=0),
            "weights": os.path.join(ns.work, f"pretrained-{ns.images}.weights.h5")}
    print(f"speed: {ns.images} JPEGs 320x240 (5 classes, 80/20 split) -> {ns.size}px, batch {ns.batch}, "
          f"{BACKBONE} pretrained from scratch on other generated data; {machine()}\n")
    if not os.path.exists(args["weights"]):
        run_stage(__file__, "pretrain", args)
    rows = []
    plain = run_stage(__file__, "head", {**args, "cache": False, "views": 1})
    for views in (1, 2):
        cached = run_stage(__file__, "head", {**args, "cache": True, "views": views})
        default = " (default)" if views == 1 else ""
        rows.append([f"head, 10 epochs, cached features, {views} view{'s' if views > 1 else ''}{default}",
                     f"{cached['seconds']:.1f} s (command {cached['command']:.0f} s)",
                     f"val acc {cached['val_accuracy']:.3f}",
                     f"{plain['seconds'] / cached['seconds']:.1f}x faster", f"{cached['rss']:.0f}"])
    rows.append(["head, 10 epochs, backbone every epoch (Keras guide)",
                 f"{plain['seconds']:.1f} s (command {plain['command']:.0f} s)",
                 f"val acc {plain['val_accuracy']:.3f}", "", f"{plain['rss']:.0f}"])
    fine = run_stage(__file__, "finetune", args)
    rows.append(["fine-tune (all layers), 3 epochs: tltool fit, whole command", f"{fine['command']:.0f} s", "", "",
                 ""])
    rows += _against_limit([("fine-tune (all layers), tltool fit, first epoch", fine["first"]),
                            ("fine-tune (all layers), tltool fit, later epochs", fine["later"])], fine["rss"],
                           "fine-tune, train_on_batch on in-memory tensors", run_stage(__file__, "finetune_limit", args))
    pred = run_stage(__file__, "predict", args)
    rows += _against_limit([("predict (decode + model), one call end to end", pred["rate"]),
                            ("predict (decode + model), steady state", pred["steady"])], pred["rss"],
                           "predict, forward pass on in-memory tensors", run_stage(__file__, "predict_limit", args))
    if not ns.skip_precision:
        base = None
        for precision, jit in (("float32", False), ("float32", True), ("mixed_bfloat16", False),
                               ("mixed_float16", False)):
            rate = run_stage(__file__, "precision", {**args, "precision": precision, "jit": jit})
            base = base or rate["rate"]
            rows.append([f"train_on_batch (no augmentation), {precision}{' + XLA' if jit else ''}",
                         f"{rate['rate']:.1f} img/s", "",
                         f"{rate['rate'] / base:.2f}x float32", f"{rate['rss']:.0f}"])
    help_s, pass_s = cli_startup()
    rows.append(["`tltool --help` (median of 7)", f"{help_s:.3f} s", "", f"python -c pass {pass_s:.3f} s", ""])
    print_table(rows, ["measurement", "time / rate", "accuracy", "comparison", "peak MiB"])


if __name__ == "__main__":
    main()
