"""Does SigLIP's fit still abort inside TensorFlow? Run it again and again, each in a fresh process, and count.

    python benchmarks/siglip_abort.py [--runs 40] [--minutes 60] [--beside 0] [--out DIR]

A tiny random SigLIP (saved as a local preset, as the tests save it) is fitted on the tiny three-colour
dataset with the command of `tests/test_hub.py` (`fine-tune-top`, one epoch of each phase, 32 px), in a fresh
`python -m tltool fit` each time, with TensorFlow's full log (TF_CPP_MIN_LOG_LEVEL=0) and Python's fault
handler writing every thread's stack to a file of its own. `--beside N` runs N more fits at the same time,
as a loaded test machine would. Each run that dies by a signal keeps its log and stack under --out; the last
line gives the count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

# Python's fault handler to a file, then tltool's command line, as `python -m tltool` would start it.
LAUNCH = ("import faulthandler, runpy, sys; faulthandler.enable(open(sys.argv.pop(1), 'w'), all_threads=True); "
          "sys.argv[0] = 'tltool'; runpy.run_module('tltool', run_name='__main__')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--beside", type=int, default=0, help="fits running at the same time as each counted one")
    parser.add_argument("--out", default=None)
    parser.add_argument("--core", action="store_true",
                        help="let a crashed fit dump its core into --out (for `gdb -batch -ex bt PYTHON CORE`)")
    args = parser.parse_args()
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="siglip-abort-"))
    os.makedirs(out, exist_ok=True)
    data, preset = _inputs(out)
    deadline, crashes, done = time.monotonic() + 60 * args.minutes, [], 0
    while done < args.runs and time.monotonic() < deadline:
        runs = [_start(out, data, preset, f"{done:02d}-{k}", args.core) for k in range(1 + args.beside)]
        for name, process, log in runs:
            code = process.wait(timeout=900)
            log.close()
            if code < 0:
                crashes.append((name, -code))
                print(f"run {name}: died by signal {-code}; see {out}/{name}.log and {out}/{name}.stack", flush=True)
            else:
                os.unlink(os.path.join(out, f"{name}.log"))
                os.unlink(os.path.join(out, f"{name}.stack"))
                shutil.rmtree(os.path.join(out, f"run-{name}"), ignore_errors=True)
                shutil.rmtree(os.path.join(out, f"core-{name}"), ignore_errors=True)
        done += 1
        print(f"{done} runs, {len(crashes)} crashes", flush=True)
    print(f"SigLIP fit: {len(crashes)} crashes in {done * (1 + args.beside)} fits ({done} rounds of "
          f"{1 + args.beside}); logs in {out}")


def _inputs(out: str) -> tuple[str, str]:
    import keras
    from test_hub import tiny_backbone

    from conftest import make_dataset

    data = make_dataset(os.path.join(out, "tiny"))
    preset = os.path.join(out, "siglip_preset")
    if not os.path.isdir(preset):
        keras.utils.set_random_seed(0)
        tiny_backbone("siglip").save_to_preset(preset)
    return data, preset


def _start(out: str, data: str, preset: str, name: str, core: bool = False):
    log = open(os.path.join(out, f"{name}.log"), "w")
    command = [sys.executable, "-c", LAUNCH, os.path.join(out, f"{name}.stack"), "fit", data, "-b", preset,
               "--image-size", "32", "--recipe", "fine-tune-top", "--epochs", "1", "--batch-size", "8",
               "--out", os.path.join(out, f"run-{name}")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    folder = os.path.join(out, f"core-{name}")
    os.makedirs(folder, exist_ok=True)  # the kernel writes `core` into the crashed process's folder

    def unlimited_core():
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    return name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                  preexec_fn=unlimited_core if core else None), log


if __name__ == "__main__":
    main()
