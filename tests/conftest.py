"""Shared fixtures: tiny generated datasets and one real `tltool fit` run.

Tests never download anything: backbones are built with weights=None at
32 px, or from weight files the tests save themselves.
"""

import fcntl
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

COLOURS = {"apple": (200, 30, 30), "leaf": (30, 180, 40), "sky": (40, 60, 210)}


# The order in which the files start: the longest first, so that no xdist worker is left running a long file
# while the other idles (xdist would order them by their number of tests; `--no-loadscope-reorder` in
# pyproject.toml keeps this order), and the files that start processes of their own last, where they overlap
# each other rather than the other worker's training (in one run that started all three early they took 50%
# longer than in the run before).
# From `pytest -n 2 --durations=0`; a file not named here runs between the two lists.
LONGEST_FIRST = ["test_hub.py", "test_backbones.py", "test_multilabel.py", "test_speed.py", "test_phases.py",
                 "test_export_formats.py", "test_fit.py", "test_evaluate_predict.py", "test_recipe_commands.py",
                 "test_export_rule.py", "test_audit.py", "test_terminal.py", "test_rates.py", "test_explain.py",
                 "test_contract.py"]
PROCESSES_LAST = ["test_api.py", "test_resume.py", "test_distribute.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    rank.update({name: len(rank) + 1 + i for i, name in enumerate(PROCESSES_LAST)})
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the image-check cache out of the user's home directory."""
    os.environ["TLTOOL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


def write_image(path, colour, size=32, seed=0, fmt=None, mode="RGB"):
    """A solid colour with noise, so classes are learnable but images differ."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


def make_dataset(root, per_class=8, classes=COLOURS, exts=(".png", ".jpg")):
    for c, (name, colour) in enumerate(classes.items()):
        for i in range(per_class):
            write_image(os.path.join(root, name, f"{name}_{i}{exts[i % len(exts)]}"), colour, seed=c * 100 + i)
    return str(root)


SHAPES = {"square": (220, 40, 40), "disc": (40, 200, 60), "bar": (50, 70, 230)}


def make_multilabel(root, images=48, seed=0):
    """Coloured shapes on grey, each image holding 0-3 of them (every combination equally often), as a
    ``path,labels`` CSV with space-separated labels; returns the CSV's path."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    rows = ["path,labels"]
    names = list(SHAPES)
    for i in range(images):
        held = [n for bit, n in enumerate(names) if (i >> bit) & 1]
        canvas = Image.fromarray(np.clip(128 + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for n in held:
            x, y = (int(v) for v in rng.integers(2, 18, 2))
            if n == "disc":
                draw.ellipse([x, y, x + 12, y + 12], fill=SHAPES[n])
            else:  # a square, or a bar: a flat rectangle
                draw.rectangle([x, y + 4 * (n == "bar"), x + 12, y + 12 - 4 * (n == "bar")], fill=SHAPES[n])
        name = f"img_{i:03d}.png"
        canvas.save(os.path.join(root, name))
        rows.append(f"{name},{' '.join(held)}")
    with open(os.path.join(root, "labels.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return os.path.join(str(root), "labels.csv")


def shared(tmp_path_factory, name, make):
    """`make(folder)` once for the whole test session, even across xdist workers (which wait for it)."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            make(folder)
            (root / f"{name}.done").write_text("")
    return str(folder)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """3 classes x 8 images of 32x32, PNG and JPEG."""
    return shared(tmp_path_factory, "tiny", make_dataset)


@pytest.fixture(scope="session")
def multilabel_csv(tmp_path_factory):
    """48 images of 32x32, each with 0-3 of 3 shapes: labels.csv (path,labels)."""
    return os.path.join(shared(tmp_path_factory, "multilabel", make_multilabel), "labels.csv")


@pytest.fixture(scope="session")
def backbone_file(tmp_path_factory):
    """VGG16 weights (random): it has no BatchNorm, so even random weights give features that vary with the image."""
    def save(folder):
        import keras

        os.makedirs(folder)
        keras.utils.set_random_seed(0)  # the same backbone in every test session
        keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3)).save_weights(
            str(folder / "vgg16.weights.h5"))

    return os.path.join(shared(tmp_path_factory, "weights", save), "vgg16.weights.h5")


def new_session(recipe: dict, data: str, folder: str):
    """A Session as `fit` makes one, in a new run directory: prepared (built, checked), then started."""
    from tltool.data.dataset import load_dataset
    from tltool.models.registry import get_backbone
    from tltool.recipe import recipe_from_dict
    from tltool.runs.run import Run
    from tltool.tasks import get_task
    from tltool.training.session import Session
    from tltool.training.setup import prepare

    recipe = recipe_from_dict(recipe)
    setup = prepare(recipe, get_backbone(recipe.backbone), load_dataset(data, progress=False), get_task())
    return Session(setup, Run.create(folder))


def killed_at(point: str, *args) -> int:
    """Run `python -m tltool ARGS` with TLTOOL_PAUSE_AT=`point` and SIGKILL it there; its return code."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TLTOOL_PAUSE_AT": point, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "tltool", *[str(a) for a in args]], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if f"paused at {point.split('@')[0]}" in line:
            process.send_signal(signal.SIGKILL)
            break
    return process.wait(timeout=120)


def run_cli(*args):
    """Invoke `tltool ARGS`; returns the click Result (exit_code, output)."""
    from tltool.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def fitted_run(tiny_data, backbone_file, tmp_path_factory):
    """One real `tltool fit` on the tiny dataset with the default recipe: VGG16 at 32 px, 20 head epochs and 1
    epoch of fine-tuning. The backbone's weights are random, but without BatchNorm its features still tell
    the colours apart, so the model's outputs differ from image to image."""
    def fit(out):
        result = run_cli("fit", tiny_data, "--backbone", "vgg16", "--weights", backbone_file, "--image-size", 32,
                         "--epochs", "head=20,fine-tune=1", "--batch-size", 8, "--out", out)
        assert result.exit_code == 0, result.output

    return shared(tmp_path_factory, "fitted_run", fit)
