"""The Python API: functions that stay functions, a Run object, and the README's example run for real."""

import os
import re
import subprocess
import sys

import pytest

from conftest import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The README's notebook-style example, on a tiny stand-in for datasets/digits."""
    make_dataset(tmp_path / "datasets" / "digits", per_class=6,
                 classes={"three": (200, 30, 30), "seven": (30, 180, 40)})
    code = readme_example() + "\nassert callable(tltool.evaluate) and callable(tltool.predict)\n" \
        "assert isinstance(run, tltool.Run) and os.path.isdir(run)\n" \
        "assert model.input_shape == (None, 32, 32, 3)\n" \
        "assert sorted(run.classes) == ['seven', 'three'] and len(rows) == 6\n"
    done = subprocess.run([sys.executable, "-c", "import os\n" + code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout


@pytest.mark.slow
def test_importing_tltool_does_not_import_tensorflow():
    done = subprocess.run([sys.executable, "-c", "import sys, tltool; tltool.Run; "
                           "print('tensorflow' in sys.modules, 'keras' in sys.modules)"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False False", done.stderr
