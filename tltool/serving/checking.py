"""Checking an exported file: run it in its own runtime on the run's images and compare it with Keras.

`export_report.json` and one terminal line give the size, the agreement
(share of identical top-1, largest probability difference), the accuracy and
its change, and the latency per image at batch 1 and 32. A format that loses
more accuracy than allowed fails with exit code 4; its file is kept.
"""

from __future__ import annotations

import itertools
import json
import os
import time

import numpy as np

from tltool.console import say, warn
from tltool.errors import ExportCheckFailed
from tltool.files import write_json
from tltool.serving.runtimes import run_batches

REPORT = "export_report.json"


def calibration_sample(rows: list[tuple[str, str]], n: int) -> list[str]:
    """n paths of (path, label) rows taken from each class in turn.

    index.csv lists the images class by class, so its first n would
    calibrate int8 value ranges on one or two classes only.
    """
    by_class: dict[str, list[str]] = {}
    for path, label in rows:
        by_class.setdefault(label, []).append(path)
    turns = itertools.zip_longest(*by_class.values())
    return [path for turn in turns for path in turn if path is not None][:n]


def file_size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def check(trained, path: str, fmt: str, samples: dict, max_accuracy_drop: float, task,
          notes: dict | None = None, report_file: str | None = None) -> dict | None:
    """Run the exported file on the run's validation (or test) images; write and print the comparison.

    The images are decoded and run CHUNK at a time, so memory does not grow with the split.

    Args:
        trained: the Keras model's `TrainedModel`, the reference.
        samples: the run's images by split (`Run.split_files`).
        task: what the outputs mean (`Task.compare` gives the figures).
        report_file: where the report goes (default: `REPORT` beside `path`); one JSON object per format.
    """
    from tltool.serving.loading import load_trained

    split = "test" if samples.get("test") else "val"
    rows = [(p, label) for p, label in samples.get(split, []) if os.path.isfile(p)]
    if not rows:
        warn(f"not checked: the run's validation and test images are not at {samples.get('root')!r}")
        return None
    targets = task.targets([label for _, label in rows], trained.classes)
    exported = load_trained(path)
    reference, probs, first = [], [], None
    for pixels in _chunks([p for p, _ in rows], trained.image_size, trained.aspect):
        first = pixels[:32].copy() if first is None else first  # for the latency; not a whole chunk kept
        reference.append(run_batches(trained.forward, pixels))
        probs.append(run_batches(exported.forward, pixels))
        del pixels  # before the next chunk is decoded
    figures = task.compare(np.concatenate(probs), np.concatenate(reference), targets)
    report = {
        "format": fmt, "file": os.path.abspath(path), "bytes": file_size(path), "split": split, "images": len(rows),
        **figures,
        "latency_ms_per_image": {"batch_1": latency(exported.forward, first, 1),
                                 "batch_32": latency(exported.forward, first, 32)},
        "max_accuracy_drop": max_accuracy_drop, **(notes or {}),
    }
    failure = task.comparison_failure(figures, max_accuracy_drop)
    report["passed"] = failure is None
    _write_report(report_file or os.path.join(os.path.dirname(os.path.abspath(path)), REPORT), fmt, report)
    timing = report["latency_ms_per_image"]
    say(f"{fmt}: {report['bytes'] / 2**20:,.1f} MB; on {len(rows)} {split} images: "
        f"{task.describe_comparison(figures)}; "
        f"{timing['batch_1']:.2f} ms/image at batch 1, {timing['batch_32']:.2f} at batch 32")
    if failure:
        raise ExportCheckFailed(f"{path}: {failure}; the file is kept for inspection")
    return report


CHUNK = 128  # images decoded at a time by the check: memory stays that of 128 images, whatever the split


def _chunks(paths: list[str], image_size: int, aspect: str):
    """float32 (n, S, S, 3) pixels of `paths`, CHUNK images at a time, in order."""
    from tltool.data.contract import prepare_file

    for start in range(0, len(paths), CHUNK):
        yield np.stack([prepare_file(p, image_size, aspect) for p in paths[start:start + CHUNK]]).astype(np.float32)


def latency(forward, pixels: np.ndarray, batch: int) -> float:
    """Milliseconds per image, median of a few timed calls after a warm-up."""
    x = np.resize(pixels, (batch, *pixels.shape[1:]))
    forward(x)
    times = []
    for _ in range(max(3, 32 // batch)):
        start = time.perf_counter()
        np.asarray(forward(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000 / batch)


def _write_report(path: str, fmt: str, report: dict) -> None:
    reports = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            reports = json.load(f)
    write_json(path, {**reports, fmt: report})
