"""Dataset layout detection and the train/val/test split."""

import os

import pytest

from tltool.data.dataset import load_dataset
from tltool.errors import DatasetError

from conftest import make_dataset, write_image


def test_split_is_stratified_seeded_and_classes_sorted(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=10, classes={"b": (0, 0, 0), "a": (90, 90, 90), "c": (200, 0, 0)})
    first = load_dataset(data, val_split=0.2, seed=7, progress=False)
    again = load_dataset(data, val_split=0.2, seed=7, progress=False)
    other = load_dataset(data, val_split=0.2, seed=8, progress=False)
    assert first.classes == ["a", "b", "c"]
    counts = first.counts()
    assert dict(counts["val"]) == {"a": 2, "b": 2, "c": 2} and dict(counts["train"]) == {"a": 8, "b": 8, "c": 8}
    split = {s.rel: s.split for s in first.samples}
    assert split == {s.rel: s.split for s in again.samples}
    assert split != {s.rel: s.split for s in other.samples}


def test_test_split_is_carved_out_too(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=10)
    ds = load_dataset(data, val_split=0.2, test_split=0.1, progress=False)
    assert {c: n for c, n in ds.counts()["test"].items()} == {"apple": 1, "leaf": 1, "sky": 1}


def test_presplit_folders_are_used_as_they_are(tmp_path):
    for split, n in (("train", 5), ("val", 2), ("test", 2)):
        make_dataset(tmp_path / "d" / split, per_class=n)
    ds = load_dataset(str(tmp_path / "d"), progress=False)
    assert ds.layout == "presplit" and not ds.problems
    assert {k: sum(c.values()) for k, c in ds.counts().items()} == {"train": 15, "val": 6, "test": 6}


def test_presplit_without_val_takes_validation_from_train(tmp_path):
    make_dataset(tmp_path / "d" / "train", per_class=10)
    ds = load_dataset(str(tmp_path / "d"), val_split=0.2, progress=False)
    assert sum(ds.counts()["val"].values()) == 6 and sum(ds.counts()["train"].values()) == 24


def test_class_only_in_validation_is_a_problem(tmp_path):
    make_dataset(tmp_path / "d" / "train", per_class=4)
    write_image(str(tmp_path / "d" / "val" / "ghost" / "g.png"), (1, 2, 3))
    ds = load_dataset(str(tmp_path / "d"), progress=False)
    assert any("'ghost' is in val but not in train" in p for p in ds.problems)
    with pytest.raises(DatasetError, match="ghost"):
        ds.require_usable()


def test_tiny_class_gets_a_warning_and_stays_in_training(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=6)
    write_image(os.path.join(data, "lonely", "only.png"), (5, 5, 5))
    ds = load_dataset(data, val_split=0.2, progress=False)
    assert any("'lonely' has 1 image(s)" in w for w in ds.warnings)
    assert ds.counts()["train"]["lonely"] == 1 and not ds.problems


def test_stray_root_files_and_hidden_files_are_not_samples(tmp_path):
    data = make_dataset(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "README.txt").write_text("about my data")
    (tmp_path / "d" / "apple" / ".DS_Store").write_bytes(b"\x00\x01")
    os.makedirs(tmp_path / "d" / ".git")
    ds = load_dataset(data, progress=False)
    assert [(s.rel, s.reason) for s in ds.skipped] == [("README.txt", "not in a class folder")]
    assert ds.hidden == 2 and len(ds.samples) == 9


def test_ambiguous_layout_is_refused(tmp_path):
    make_dataset(tmp_path / "d" / "train", per_class=2)
    make_dataset(tmp_path / "d" / "extra", per_class=2)
    with pytest.raises(DatasetError, match="every sub-folder must be a split"):
        load_dataset(str(tmp_path / "d"), progress=False)
