"""Every export format of a trained run: size, agreement with Keras, accuracy, latency.

Run by hand:

    python benchmarks/export.py --weights ../shared/weights/mobilenetv2_dogs.weights.h5

Trains the pretrained MobileNetV2 (head on a frozen backbone, 20 epochs) on
the accuracy benchmark's digits at 96 and 224 px, exports each run to every
format with `tltool export` and prints one table from the export reports
(measured on the run's validation images), with the Keras model on the same
images as the reference. EfficientNetB0 (the default backbone; random
weights offline, so its accuracy means nothing) is added for size and
latency only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FORMATS = ("onnx", "litert", "litert-fp16", "litert-int8")


def train(data: str, backbone: str, size: int, weights: str, work: str, epochs: int, reuse: bool = False) -> str:
    from checkpoints import HEAD_ONLY

    import tltool

    out = os.path.join(work, "runs", f"export-{backbone}-{size}")
    if reuse and os.path.isfile(os.path.join(out, "model.keras")):
        return out
    recipe = os.path.join(work, "head-20.yaml")
    with open(recipe, "w") as f:
        f.write(HEAD_ONLY)
    return tltool.fit(data, recipe=recipe, backbone=backbone, weights=weights, image_size=size,
                      epochs=str(epochs), out=out, overwrite=True, progress=False).dir


def keras_latency(run: str) -> dict:
    import numpy as np

    from tltool.serving.checking import latency
    from tltool.serving.loading import load_trained

    trained = load_trained(run)
    pixels = np.random.default_rng(0).uniform(0, 255, (32, trained.image_size, trained.image_size, 3)).astype("float32")
    return {"batch_1": latency(trained.forward, pixels, 1), "batch_32": latency(trained.forward, pixels, 32)}


def exported(run: str, fmt: str, folder: str, **options) -> dict:
    """The export report of `fmt` in `folder`, exporting first unless the file is there."""
    import tltool
    from tltool.errors import ExportCheckFailed
    from tltool.serving.formats import FORMATS as FILES

    if not os.path.exists(os.path.join(folder, FILES[fmt])):
        try:
            tltool.export(run, fmt, out=os.path.join(folder, FILES[fmt]), **options)
        except ExportCheckFailed as failed:  # the report is written before the check fails
            print(f"{fmt}: {failed}", file=sys.stderr)
    with open(os.path.join(folder, "export_report.json"), encoding="utf-8") as f:
        return json.load(f)[fmt]


def rows_for(run: str, label: str, accuracy_means_something: bool) -> list[list]:
    """One row per format (int8 twice: float fallback on, the default, and full integer), Keras first."""
    folder = os.path.join(run, "export")
    reports = [(fmt, exported(run, fmt, folder)) for fmt in FORMATS]
    full = exported(run, "litert-int8", os.path.join(run, "export-full-integer"), float_layers="none")
    reports.append(("litert-int8, full integer", full))
    keras = keras_latency(run)
    acc = (lambda r: f"{100 * r['accuracy']:.2f}%") if accuracy_means_something else (lambda r: "n/a")
    rows = [[label, "keras (reference)", f"{os.path.getsize(os.path.join(run, 'model.keras')) / 2**20:.1f}", "",
             "", f"{100 * reports[0][1]['keras_accuracy']:.2f}%" if accuracy_means_something else "n/a", "",
             f"{keras['batch_1']:.2f}", f"{keras['batch_32']:.2f}"]]
    for fmt, r in reports:
        if fmt == "litert-int8":
            count = len(r["float_layers"])
            fmt += f", {count} layer{'s' * (count > 1)} float" if count else ", full integer"
        rows.append([label, fmt, f"{r['bytes'] / 2**20:.2f}", f"{100 * r['top1_agreement']:.2f}%",
                     f"{r['max_probability_difference']:.1e}", acc(r),
                     f"{100 * r['accuracy_change']:+.2f}" if accuracy_means_something else "n/a",
                     f"{r['latency_ms_per_image']['batch_1']:.2f}", f"{r['latency_ms_per_image']['batch_32']:.2f}"])
    return rows


def main() -> None:
    import accuracy

    from common import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the pretrained MobileNetV2 weights file")
    parser.add_argument("--work", default="/tmp/tltool-accuracy")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="keep runs and exports already there; delete an export file to redo that format")
    args = parser.parse_args()
    data = accuracy.dataset("digits", args.work)
    rows = []
    for size in (96, 224):
        run = train(data, "mobilenetv2", size, os.path.abspath(args.weights), args.work, 20, args.reuse_runs)
        rows += rows_for(run, f"mobilenetv2 {size} px", True)
    run = train(data, "efficientnetb0", 224, "none", args.work, 1, args.reuse_runs)
    rows += rows_for(run, "efficientnetb0 224 px (random weights)", False)
    print(markdown_table(["model", "format", "MB", "top-1 = Keras", "max prob. diff.", "accuracy", "change (points)",
                          "ms/image, batch 1", "ms/image, batch 32"], rows))


if __name__ == "__main__":
    main()
