"""`tltool datasets example` and `tltool datasets export` (tensorflow-datasets)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli

DEAD_PROXY = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


def test_example_digits_is_built_offline_and_only_once(tmp_path):
    dest = tmp_path / "digits"
    first = run_cli("datasets", "example", "digits", dest)
    assert first.exit_code == 0 and "wrote 1797 images in 10 class folders" in first.output
    assert sorted(os.listdir(dest)) == [".tltool-example", "eight", "five", "four", "nine", "one", "seven", "six",
                                        "three", "two", "zero"]
    again = run_cli("datasets", "example", "digits", dest)
    assert again.exit_code == 0 and "already holds" in again.output
    summary = json.loads(run_cli("inspect", dest, "--json").output)
    assert summary["usable"] and summary["hidden_ignored"] == 0 and summary["sizes"]["median"] == "32x32"


def test_example_refuses_a_folder_with_other_things_in_it(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    result = run_cli("datasets", "example", "digits", tmp_path)
    assert result.exit_code == 2 and "not empty" in result.output


@pytest.mark.slow
def test_export_without_network_fails_at_once_with_the_fixes(tmp_path):
    env = {**os.environ, **DEAD_PROXY, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    done = subprocess.run([sys.executable, "-m", "tltool", "datasets", "export", "tf_flowers", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot download tf_flowers" in error[0] and "--data-dir" in error[0]
    assert not os.path.exists(tmp_path / "out")


def test_export_of_an_unknown_dataset_suggests_names(tmp_path):
    result = run_cli("datasets", "export", "tf_flowrs", tmp_path / "out")
    assert result.exit_code == 2 and "did you mean: tf_flowers" in result.output


def test_export_writes_each_split_as_class_folders(tmp_path):
    import tensorflow_datasets as tfds
    import tensorflow_datasets.testing as tfds_testing  # a submodule that older releases do not load by themselves

    from tltool.data.tfds_export import write_folders

    dest = tmp_path / "beans"
    with tfds_testing.mock_data(num_examples=6):  # tensorflow-datasets' own offline stand-in data
        builder = tfds.builder("beans", data_dir=str(tmp_path / "tfds"))
        counts = write_folders(builder, str(dest), ["train", "validation", "test"], progress=False)
    assert counts == {"train": 6, "val": 6, "test": 6}
    summary = json.loads(run_cli("inspect", dest, "--json").output)
    assert summary["layout"] == "presplit" and summary["images"] == {"train": 6, "val": 6, "test": 6}
    assert {c["class"] for c in summary["classes"]} <= {"angular_leaf_spot", "bean_rust", "healthy"}
