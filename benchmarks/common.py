"""Shared helpers for the benchmarks: generated data, timing, memory, stages in subprocesses.

Benchmarks are run by hand and print tables; they are not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_jpegs(folder: str, n: int, classes: int = 5, size: tuple[int, int] = (320, 240), seed: int = 0) -> str:
    """n photo-like JPEGs (smooth colour fields and shapes, class-dependent hue) in class folders.

    Reuses the folder when it already holds n images.
    """
    from PIL import Image, ImageDraw

    marker = os.path.join(folder, f".generated-{n}-{classes}-{size[0]}x{size[1]}")
    if os.path.exists(marker):
        return folder
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        c = i % classes
        hue = np.array([60 + 35 * c, 200 - 30 * c, 90 + 25 * (c % 3)], float)
        field = hue + 40 * np.sin(xx[..., None] / rng.uniform(20, 60) + rng.uniform(0, 6)) \
            + 30 * np.cos(yy[..., None] / rng.uniform(20, 60))
        image = Image.fromarray(np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.integers(0, w - 40), rng.integers(0, h - 40)
            draw.ellipse([x, y, x + rng.integers(20, 80), y + rng.integers(20, 80)],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        target = os.path.join(folder, f"class_{c}")
        os.makedirs(target, exist_ok=True)
        image.save(os.path.join(target, f"img_{i:05d}.jpg"), quality=90)
    open(marker, "w").close()
    return folder


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def parse_args(doc: str, extra=()) -> argparse.Namespace:
    """The options both benchmarks take; `extra` adds (flags, kwargs) pairs."""
    import tempfile

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tltool-bench"))
    for flags, kwargs in extra:
        parser.add_argument(*flags, **kwargs)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_if_stage(ns, stages: dict) -> bool:
    """In a stage subprocess: run the stage, print its JSON result, return True."""
    if not ns.stage:
        return False
    print(json.dumps(stages[ns.stage](json.loads(ns.args))))
    return True


def run_stage(script: str, stage: str, args: dict) -> dict:
    """Run `script --stage STAGE --args JSON` in a fresh process; it prints one JSON line."""
    done = subprocess.run([sys.executable, script, "--stage", stage, "--args", json.dumps(args)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Timed:
    """A command timed as a user waits for it, from its process start."""

    seconds: float  # to its exit
    peak_mb: float  # its peak RSS
    output: str  # stdout and stderr
    marks: dict[str, float]  # seconds to the first output line holding each mark


def timed_command(cmd: list[str], env: dict | None = None, marks: dict[str, str] | None = None) -> Timed:
    """Run a command as a user would, reading its output line by line to time each of `marks` (name -> text)."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    seen, lines = {}, []
    for line in process.stdout:
        lines.append(line)
        for name, mark in (marks or {}).items():
            if name not in seen and mark in line:
                seen[name] = time.perf_counter() - start
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}...: exit {process.returncode}\n{output[-3000:]}")
    return Timed(seconds, usage.ru_maxrss / 1024, output, seen)


def tltool_command() -> str:
    return shutil.which("tltool") or os.path.join(os.path.dirname(sys.executable), "tltool")


def print_table(rows: list[list], headers: list[str]) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tltool.console import table

    print(table(rows, headers))


def machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A table to paste into the README."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])
