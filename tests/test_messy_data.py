"""A real, messy folder: inspect and fit both finish, train on the good files,
report every bad one with its reason, and agree on the counts."""

import io
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import COLOURS, make_dataset, run_cli, write_image

BAD = {  # file -> the reason it must be skipped with
    "apple/half.jpg": "truncated",
    "apple/broken.jpg": "truncated",  # a JPEG header, then no image
    "apple/zero.jpg": "empty file",
    "leaf/notes.png": "not an image",
    "leaf/deep/half.png": "truncated",
    "sky/phone.heic": "unsupported format (HEIC)",
    "README.txt": "not in a class folder",
}
ACCENTED = "Crème brûlée"


def _jpeg(array, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    make_dataset(root, per_class=6)
    noise = np.random.default_rng(1).uniform(0, 255, (48, 64, 3)).astype(np.uint8)
    good = _jpeg(noise)
    (root / "apple" / "half.jpg").write_bytes(good[: len(good) // 2])
    (root / "apple" / "zero.jpg").write_bytes(b"")
    (root / "apple" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "leaf" / "notes.png").write_text("not a picture")
    os.makedirs(root / "leaf" / "deep")
    png = io.BytesIO()
    Image.fromarray(noise).save(png, "PNG")
    (root / "leaf" / "deep" / "half.png").write_bytes(png.getvalue()[:3000])
    (root / "sky" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    (root / "README.txt").write_text("my dataset")
    (root / "apple" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    os.makedirs(root / ".thumbnails")
    # awkward but good files, which must be used
    Image.fromarray(np.full((30, 40, 3), COLOURS["apple"], np.uint8)).convert("CMYK").save(root / "apple" / "print.jpg")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(root / "leaf" / "depth16.png")
    rotated = Image.fromarray(np.full((20, 40, 3), COLOURS["sky"], np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "sky" / "phone.JPG", exif=exif.tobytes())
    write_image(str(root / "leaf" / "deep" / "nested.png"), COLOURS["leaf"], seed=9)
    write_image(str(root / "sky" / "no_extension"), COLOURS["sky"], seed=10, fmt="PNG")
    for i in range(4):
        write_image(str(root / ACCENTED / f"dessert {i}.png"), (230, 200, 120), seed=20 + i)
    write_image(str(root / "lonely" / "only one.png"), (0, 0, 0), seed=30)
    return str(root)


def test_inspect_reports_every_bad_file_and_the_counts(messy):
    result = run_cli("inspect", messy, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {s["path"]: s["reason"] for s in summary["skipped"]} == BAD
    assert [c["class"] for c in summary["classes"]] == [ACCENTED, "apple", "leaf", "lonely", "sky"]  # sorted()
    totals = {c["class"]: c["total"] for c in summary["classes"]}
    assert totals == {"apple": 7, ACCENTED: 4, "leaf": 8, "lonely": 1, "sky": 8}
    assert summary["hidden_ignored"] == 2
    assert any("'lonely' has 1 image(s)" in w for w in summary["warnings"])
    assert {"CMYK", "I;16", "RGB"} <= set(summary["modes"])
    text = run_cli("inspect", messy)
    assert "usable: yes" in text.output and re.search(r"^apple/half.jpg +truncated$", text.output, re.M)


@pytest.mark.slow
def test_fit_trains_on_the_good_files_and_agrees_with_inspect(messy, backbone_file, tmp_path):
    summary = json.loads(run_cli("inspect", messy, "--json").output)
    result = run_cli("fit", messy, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "linear-probe", "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "skipped 7 file(s)" in result.output
    run = tmp_path / "run"
    skipped = pd.read_csv(run / "data" / "skipped.csv")
    assert dict(zip(skipped["path"], skipped["reason"])) == BAD
    index = pd.read_csv(run / "data" / "index.csv")
    assert index.groupby("split").size().to_dict() == {k: v for k, v in summary["images"].items() if v}
    assert sorted(index["label"].unique()) == sorted(c["class"] for c in summary["classes"])
    classes = json.load(open(run / "classes.json", encoding="utf-8"))
    assert ACCENTED in classes.values()
    assert int(pd.read_csv(run / "per_class.csv")["support"].sum()) == summary["images"]["val"]
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "7 file(s) could not be read" in report and "apple/half.jpg: truncated" in report  # as evaluate lists them


def test_empty_class_makes_the_dataset_unusable(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=3)
    os.makedirs(os.path.join(data, "nothing here"))
    result = run_cli("inspect", data)
    assert result.exit_code == 2
    assert "not usable: class 'nothing here' has no usable training images" in result.output


def test_fewer_than_two_usable_classes_is_unusable(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=3, classes={"only": (1, 2, 3)})
    result = run_cli("inspect", data, "--json")
    assert result.exit_code == 2 and json.loads(result.output)["usable"] is False


def test_duplicates_across_classes_and_splits_are_found(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=5)
    with open(os.path.join(data, "apple", "apple_0.png"), "rb") as f:
        copy = f.read()
    with open(os.path.join(data, "leaf", "mislabelled.png"), "wb") as f:
        f.write(copy)
    summary = json.loads(run_cli("inspect", data, "--json").output)
    assert summary["duplicates"]["across_classes"] == [["apple/apple_0.png", "leaf/mislabelled.png"]]
    assert any("appear under two classes" in w for w in summary["warnings"])


def test_a_csv_of_paths_and_labels_is_a_dataset(tmp_path, tiny_data):
    rows = [(os.path.join(tiny_data, c, f), c, "val" if i < 2 else "train")
            for c in sorted(COLOURS) for i, f in enumerate(sorted(os.listdir(os.path.join(tiny_data, c))))]
    csv = tmp_path / "data.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(csv, index=False)
    summary = json.loads(run_cli("inspect", csv, "--json").output)
    assert summary["layout"] == "csv" and summary["images"] == {"train": 18, "val": 6, "test": 0}
    pd.DataFrame(rows, columns=["file", "label", "split"]).to_csv(tmp_path / "bad.csv", index=False)
    result = run_cli("inspect", tmp_path / "bad.csv")
    assert result.exit_code == 2 and "missing column(s) path" in result.output


def test_an_empty_label_cell_in_a_single_label_csv_is_an_error_naming_its_lines(tmp_path, tiny_data):
    rows = [(os.path.join(tiny_data, c, f), "" if i in (1, 3) and c == "leaf" else c)
            for c in sorted(COLOURS) for i, f in enumerate(sorted(os.listdir(os.path.join(tiny_data, c))))]
    csv = tmp_path / "data.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    result = run_cli("inspect", csv)
    assert result.exit_code == 2
    assert "empty label on line(s) 11, 13;" in result.output and '""' not in result.output


def test_a_csv_class_whose_training_files_are_all_unreadable_is_named_as_such(tmp_path, tiny_data):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n")  # a header, then nothing
    rows = [(os.path.join(tiny_data, c, f), c, "val" if i < 2 else "train")
            for c in ("apple", "leaf") for i, f in enumerate(sorted(os.listdir(os.path.join(tiny_data, c))))]
    rows += [(str(broken), "sky", "train"), (os.path.join(tiny_data, "sky", "sky_0.png"), "sky", "val")]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(tmp_path / "data.csv", index=False)
    summary = json.loads(run_cli("inspect", tmp_path / "data.csv", "--json").output)
    assert [c["class"] for c in summary["classes"]] == ["apple", "leaf", "sky"]  # it does not vanish
    assert summary["problems"] == ["class 'sky' has no usable training images (1 skipped, see the skipped files); "
                                   "add images or remove its rows from the CSV"]


def test_split_from_reuses_an_earlier_split(fitted_run, tiny_data, tmp_path):
    import shutil

    data = tmp_path / "grown"
    shutil.copytree(tiny_data, data)
    write_image(str(data / "apple" / "new.png"), COLOURS["apple"], seed=99)
    result = run_cli("inspect", data, "--split-from", fitted_run, "--json", "--seed", 4)
    summary = json.loads(result.output)
    index = pd.read_csv(os.path.join(fitted_run, "data", "index.csv"))
    assert summary["images"]["val"] == (index["split"] == "val").sum()
    assert summary["images"]["train"] == (index["split"] == "train").sum()
    assert any("1 file(s) are not in the split" in w for w in summary["warnings"])
