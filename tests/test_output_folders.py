"""The folders tltool writes: never read back as data, never written inside the data, and only ever replaced by
the command that wrote them."""

import os
import shutil

import pytest

from tltool.data.scan import scan
from tltool.files import EXPLAIN_MARKER, RUN_MARKER

from conftest import make_dataset, run_cli


def test_the_scanner_reads_no_folder_that_tltool_wrote(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=2)
    run = tmp_path / "photos" / "runs" / "2026-12-08-vgg16"
    (run / "data").mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}")
    shutil.copy(os.path.join(data, "apple", "apple_0.png"), run / "confusion_matrix.png")
    explained = tmp_path / "photos" / "apple" / "explanations"  # inside a class folder
    explained.mkdir()
    (explained / EXPLAIN_MARKER).write_text("{}")
    shutil.copy(os.path.join(data, "leaf", "leaf_0.png"), explained / "leaf_0.png")

    found = scan(data, progress=False)

    assert sorted({s.label for s in found.samples}) == ["apple", "leaf", "sky"]
    assert len(found.samples) == 6
    assert not any("runs" in s.rel or "explanations" in s.rel for s in found.samples + found.skipped)
    assert found.hidden == 0  # tltool's own markers are not the user's hidden files


def test_a_presplit_dataset_may_hold_a_runs_folder(tmp_path):
    for split in ("train", "val"):
        make_dataset(tmp_path / "data" / split, per_class=2)
    run = tmp_path / "data" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / RUN_MARKER).write_text("{}")

    found = scan(str(tmp_path / "data"), progress=False)

    assert found.layout == "presplit" and len(found.samples) == 12


@pytest.mark.parametrize("inside", ["runs/x", "apple/runs"])
def test_fit_refuses_an_out_inside_the_data_in_one_line(tmp_path, inside):
    data = make_dataset(tmp_path / "photos", per_class=2)

    result = run_cli("fit", data, "--backbone", "vgg16", "--weights", "none", "--out", os.path.join(data, inside))

    assert result.exit_code == 2
    assert "inside" in result.output and "holds the dataset's images" in result.output
    assert "holds the dataset's images" in result.output.strip().splitlines()[-1]  # one line
    assert not os.path.exists(os.path.join(data, inside))


def test_fit_refuses_an_out_in_a_csv_datasets_image_folder_through_a_symlink(tmp_path):
    images = make_dataset(tmp_path / "images", per_class=2)
    (tmp_path / "meta").mkdir()
    csv = tmp_path / "meta" / "labels.csv"
    rows = [f"{os.path.join(images, c, f'{c}_{i}.png' if i % 2 == 0 else f'{c}_{i}.jpg')},{c}"
            for c in ("apple", "leaf", "sky") for i in range(2)]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    os.symlink(images, tmp_path / "link")

    result = run_cli("fit", csv, "--backbone", "vgg16", "--weights", "none",
                     "--out", tmp_path / "link" / "apple" / "run")

    assert result.exit_code == 2 and "holds the dataset's images" in result.output


def test_audit_never_replaces_a_folder_of_the_users_that_holds_a_file_of_the_same_name(tmp_path):
    data = make_dataset(tmp_path / "photos", per_class=2)
    users = tmp_path / "mine"
    users.mkdir()
    (users / "duplicates.csv").write_text("mine\n")  # what audit writes, and fit in RUN/data/
    (users / "index.csv").write_text("mine\n")

    result = run_cli("audit", data, "--weights", "none", "--out", users, "--overwrite")

    assert result.exit_code == 2 and "never replaced" in result.output
    assert (users / "index.csv").read_text() == "mine\n"


@pytest.mark.slow
def test_explain_never_replaces_a_folder_of_the_users_and_fit_overwrite_removes_its_own(fitted_run, tiny_data,
                                                                                       tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "explanations.csv").write_text("mine\n")
    image = os.path.join(tiny_data, "apple", "apple_0.png")

    refused = run_cli("explain", fitted_run, image, "--out", users, "--overwrite")
    assert refused.exit_code == 2 and "never replaced" in refused.output
    assert (users / "explanations.csv").read_text() == "mine\n"

    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    assert run_cli("explain", run, image).exit_code == 0
    assert (run / "explanations" / EXPLAIN_MARKER).is_file()
    again = run_cli("explain", run, image, "--overwrite")
    assert again.exit_code == 0, again.output
    from tltool.runs.run import Run

    Run(str(run)).remove_outputs()  # what fit --overwrite does first
    assert not (run / "explanations").exists()
