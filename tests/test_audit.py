"""`tltool audit`, and fit's leakage line: planted copies, a swapped label and a blank image are found."""

import hashlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from conftest import COLOURS, run_cli, shared, write_image


def plant(root):
    """Pre-split colour folders (train 8, val 3 per class) with planted faults: in val, an exact copy of a
    train image, a shifted, rescaled and re-encoded copy of another and a copy re-encoded only; a sky image
    filed under leaf, and a blank white image under apple."""
    for c, (name, colour) in enumerate(COLOURS.items()):
        for i in range(11):
            split = "train" if i < 8 else "val"
            write_image(os.path.join(root, split, name, f"{name}_{i}.png"), colour, seed=c * 100 + i)
    shutil.copy(root / "train" / "apple" / "apple_0.png", root / "val" / "apple" / "exact_copy.png")
    yy, xx = np.mgrid[0:32, 0:32]  # a sky with a cloud and a roof: a picture, which a copy stays close to
    original = Image.fromarray(np.stack([60 + 2 * xx, 120 + 2 * yy, 230 - 2 * xx], -1).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(original)
    draw.ellipse([6, 8, 20, 22], fill=(250, 250, 250))
    draw.rectangle([20, 3, 28, 12], fill=(20, 40, 90))
    original.save(root / "train" / "sky" / "sky_1.png")
    shifted = Image.new("RGB", original.size)
    shifted.paste(original, (1, 0))
    shifted.resize((40, 40), Image.Resampling.BILINEAR).save(root / "val" / "sky" / "near_copy.jpg", quality=85)
    original.save(root / "val" / "sky" / "reencoded.jpg", quality=90)
    write_image(os.path.join(root, "train", "leaf", "actually_sky.png"), COLOURS["sky"], seed=999)
    Image.new("RGB", (32, 32), (255, 255, 255)).save(root / "train" / "apple" / "blank.png")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return shared(tmp_path_factory, "planted", plant)


def snapshot(root):
    return {os.path.relpath(os.path.join(d, n), root): hashlib.sha1(open(os.path.join(d, n), "rb").read()).hexdigest()
            for d, _, names in os.walk(root) for n in names}


@pytest.mark.slow
def test_audit_finds_the_planted_faults_and_its_clean_csv_trains(planted, backbone_file, tmp_path):
    before = snapshot(planted)
    out, clean = tmp_path / "audit", tmp_path / "clean.csv"
    result = run_cli("audit", planted, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32, "--out", out,
                     "--write-clean", clean)
    assert result.exit_code == 0, result.output
    assert snapshot(planted) == before  # no file touched, moved or added under DATA
    pairs = pd.read_csv(out / "duplicates.csv")
    found = {(a, b): kind for a, b, kind in zip(pairs["path_a"], pairs["path_b"], pairs["kind"])}
    found.update({(b, a): kind for (a, b), kind in list(found.items())})
    assert found[("train/apple/apple_0.png", "val/apple/exact_copy.png")] == "exact"
    assert found[("train/sky/sky_1.png", "val/sky/near_copy.jpg")] == "near"
    assert found[("train/sky/sky_1.png", "val/sky/reencoded.jpg")] == "near"
    assert found[("val/sky/near_copy.jpg", "val/sky/reencoded.jpg")] == "near"  # within a split too
    assert len(found) == 8, pairs  # the planted pairs, both ways, and nothing else
    assert pairs[pairs["path_a"].str.contains("sky")]["cluster"].nunique() == 1  # the three copies, one cluster
    issues = pd.read_csv(out / "label_issues.csv")
    flagged = dict(zip(issues["path"], issues["suggested"]))
    assert flagged.get("train/leaf/actually_sky.png") == "sky", issues
    outliers = pd.read_csv(out / "outliers.csv")
    assert "train/apple/blank.png" in set(outliers["path"]), outliers
    assert (out / "report.html").read_text().count("<img") >= 6  # thumbnails of every finding
    assert "across splits (leaks)" in result.output

    rows = pd.read_csv(clean)
    assert all(os.path.isabs(p) for p in rows["path"])
    kept = {os.path.relpath(p, planted) for p in rows["path"]}
    assert "train/apple/apple_0.png" not in kept and "val/apple/exact_copy.png" in kept  # the train copy goes
    assert not {"train/leaf/actually_sky.png", "train/apple/blank.png"} & kept
    again = run_cli("audit", planted, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                    "--out", tmp_path / "other", "--write-clean", clean)
    assert again.exit_code != 0 and "never overwritten" in again.output
    inside = run_cli("audit", planted, "--out", os.path.join(planted, "audit"))
    assert inside.exit_code != 0 and "never writes under the data" in inside.output

    fitted = run_cli("fit", clean, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "linear-probe", "--epochs", 1, "--out", tmp_path / "run")
    assert fitted.exit_code == 0, fitted.output
    assert "leakage:" not in fitted.output
    assert "val read from the audit's embeddings" in fitted.output  # the backbone does not run on them again


@pytest.mark.slow
def test_fit_says_how_many_images_leak_and_lists_them(planted, backbone_file, tmp_path):
    result = run_cli("fit", planted, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "linear-probe", "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    # fit, without a backbone, counts 2 bits as near: the copy shifted and rescaled too (4 bits) is audit's
    assert "leakage: 2 of 12 val images have a copy in train (1 exact, 1 near)" in result.output
    leaks = pd.read_csv(tmp_path / "run" / "data" / "leakage.csv")
    assert sorted(leaks["path_a"]) == ["val/apple/exact_copy.png", "val/sky/reencoded.jpg"]
    assert "2 of the 12 images evaluated here have a copy in an earlier split" in (tmp_path / "run" / "report.md").read_text()
    from tltool.data.dataset import load_dataset
    from tltool.workflows.fitting import find_leaks
    from tltool.workflows.resolving import resolve_recipe

    off = resolve_recipe(check_leakage=False)  # what --no-check-leakage (or data.check_leakage: false) gives
    assert find_leaks(load_dataset(str(planted), progress=False), off, "unused") is None
    # audit --model RUN: the run's own training images are not judged by the network that learnt their labels.
    audited = run_cli("audit", planted, "--model", tmp_path / "run", "--out", tmp_path / "audit")
    assert audited.exit_code == 0, audited.output
    assert "only the 11 images" in audited.output  # val, less the exact copy of a train image
    assert "did not train on are flagged" in audited.output
    issues = pd.read_csv(tmp_path / "audit" / "label_issues.csv")
    assert not any(path.startswith("train/") for path in issues["path"])


def test_a_group_of_many_copies_is_one_short_warning_and_every_path_is_in_a_file(tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.data.summary import duplicate_warnings

    for k, split in enumerate(("train", "val")):
        for c, (name, colour) in enumerate(COLOURS.items()):
            write_image(os.path.join(tmp_path, split, name, f"{name}.png"), colour, seed=10 * k + c)
    for i in range(40):  # a group of 41 copies
        shutil.copy(tmp_path / "train" / "sky" / "sky.png", tmp_path / "val" / "sky" / f"copy_{i}.png")
    warnings = duplicate_warnings(load_dataset(str(tmp_path), progress=False), "RUN/data/duplicates.csv")
    assert len(warnings) == 1 and "(and 38 more copies)" in warnings[0] and len(warnings[0]) < 300
    assert warnings[0].endswith("every group: RUN/data/duplicates.csv")


def test_a_test_image_copied_into_val_is_a_leak_too(tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.data.duplicates import describe_leaks, leaks

    for split in ("train", "val", "test"):
        for c, (name, colour) in enumerate(COLOURS.items()):
            for i in range(2):
                write_image(os.path.join(tmp_path, split, name, f"{name}_{i}.png"), colour,
                            seed=100 * ("train", "val", "test").index(split) + 10 * c + i)
    shutil.copy(tmp_path / "val" / "sky" / "sky_0.png", tmp_path / "test" / "sky" / "copy.png")
    dataset = load_dataset(str(tmp_path), progress=False)

    table = leaks(dataset.samples, dataset.infos)

    assert list(zip(table["path_a"], table["path_b"], table["kind"])) == [("test/sky/copy.png", "val/sky/sky_0.png",
                                                                           "exact")]
    assert describe_leaks(table, dataset.images()) == \
        "leakage: 1 of 7 test images have a copy in val (1 exact, 0 near)"


def test_the_perceptual_hash_is_imagehashs_phash():
    imagehash = pytest.importorskip("imagehash")
    from tltool.data.images import perceptual_hash

    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    assert perceptual_hash(pixels) == str(imagehash.phash(Image.fromarray(pixels)))


def _csv_dataset(folder, columns: str, cells: list[str]):
    """A CSV dataset of one small image per cell: path,COLUMNS with each row's cells; loaded."""
    from tltool.data.dataset import load_dataset

    rows = [f"path,{columns}"]
    for i, cell in enumerate(cells):
        write_image(str(folder / f"{i}.png"), (40 * (i % 6), 90, 200), seed=i)
        rows.append(f"{i}.png,{cell}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return load_dataset(str(folder / "labels.csv"), progress=False)


def _nothing_found(tmp_path, images: int):
    """An audit that flagged nothing: its clean CSV keeps every image."""
    from tltool.data.duplicates import COLUMNS
    from tltool.quality.findings import Thresholds
    from tltool.workflows.auditing import Audit

    return Audit(str(tmp_path / "audit"), images, pd.DataFrame(columns=[*COLUMNS, "cluster"]), None,
                 pd.DataFrame(columns=["path"]), Thresholds())


def test_the_clean_csv_keeps_multi_label_names_that_hold_a_space(tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.workflows.auditing import write_clean_csv

    labels = [("disc", "red square"), ("disc",), ("red square",), ()] * 3
    dataset = _csv_dataset(tmp_path / "data", "labels", [";".join(held) for held in labels])
    clean = write_clean_csv(str(tmp_path / "clean.csv"), dataset, _nothing_found(tmp_path, len(labels)),
                            relabel=False)
    again = load_dataset(clean, progress=False)
    assert {os.path.basename(s.path): s.labels for s in again.samples} == \
        {os.path.basename(s.path): s.labels for s in dataset.samples}


def test_a_name_with_a_space_round_trips_through_every_file_tltool_writes_when_no_row_has_two_labels(tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.data.scan import split_labels
    from tltool.data.split import index_rows
    from tltool.tasks import get_task
    from tltool.workflows.auditing import write_clean_csv

    held = [("red square",), ("disc",), ()] * 4  # one-hot columns: the user's file is unambiguous
    dataset = _csv_dataset(tmp_path / "data", "red square,disc",
                           [f"{int('red square' in labels)},{int('disc' in labels)}" for labels in held])
    truth = {s.rel: s.labels for s in dataset.samples}

    index = pd.DataFrame(index_rows(dataset.samples))  # data/index.csv, as Run.split_files reads it back
    index.to_csv(tmp_path / "index.csv", index=False)
    cells = list(pd.read_csv(tmp_path / "index.csv", dtype=str, keep_default_na=False)["labels"])
    assert dict(zip(index["path"], split_labels(cells))) == truth

    again = load_dataset(write_clean_csv(str(tmp_path / "clean.csv"), dataset, _nothing_found(tmp_path, len(held)),
                                         relabel=False), progress=False)
    assert {os.path.basename(s.path): s.labels for s in again.samples} == \
        {os.path.basename(p): labels for p, labels in truth.items()}

    task = get_task("multi-label").decided({"thresholds": [0.5, 0.5]})
    predicted = task.csv_rows(task.prediction_rows(["a.png", "b.png"], np.array([[0.9, 0.1], [0.1, 0.2]]),
                                                   ["red square", "disc"], top_k=2))
    assert split_labels(list(predicted["labels"])) == [("red square",), ()]


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_a_class_of_one_image_gets_no_label_score_and_a_note(classes, monkeypatch):
    from tltool.data.scan import Sample
    from tltool.quality.findings import Thresholds, label_issues, normalised

    rng = np.random.default_rng(0)
    labels = [c for c in classes[1:] for _ in range(12)] + [classes[0]]  # classes[0] holds one image
    centres = {c: rng.normal(0, 1, 16) for c in classes}
    unit = normalised(np.stack([centres[c] + rng.normal(0, 0.1, 16) for c in labels]))
    samples = [Sample(f"/d/{i}.png", f"{c}/{i}.png", c, "train") for i, c in enumerate(labels)]

    def no_fork():
        raise AssertionError("a process was forked from one that has TensorFlow loaded")

    monkeypatch.setattr(os, "fork", no_fork)
    table, note = label_issues(samples, classes, unit, Thresholds())

    assert "a/" not in " ".join(table["path"])
    if len(classes) == 2:
        assert note == "not looked for: fewer than 2 classes have 2 images or more" and table.empty
    else:
        assert note == "not scored: a (fewer than 2 images)"


def test_audit_leaves_the_callers_random_state_as_it_was(tiny_data, tmp_path):
    import random

    import keras

    import tltool

    random.seed(7)
    np.random.seed(7)
    keras.utils.set_random_seed(7)
    before = (random.random(), np.random.rand(), float(keras.random.uniform(())))
    random.seed(7)
    np.random.seed(7)
    keras.utils.set_random_seed(7)
    tltool.audit(tiny_data, backbone="vgg16", weights="none", image_size=32, seed=3, out=str(tmp_path / "a"),
                 progress=False)  # seeds its random backbone with 3
    assert (random.random(), np.random.rand(), float(keras.random.uniform(()))) == before


def test_the_capped_hash_search_finds_every_close_pair_of_a_small_group_and_stays_linear_on_look_alikes():
    from tltool.data.duplicates import closest_hash_pairs, hash_pairs

    rng = np.random.default_rng(0)
    spread = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)  # unrelated: about 32 bits apart
    copies = spread[:20] ^ (np.uint64(1) << rng.integers(0, 64, 20).astype(np.uint64))  # 1 bit from an original
    hashes = np.concatenate([spread, copies])
    exhaustive = {(i, j) for i, j, _ in hash_pairs(hashes, None, 6)}
    assert {(int(i), int(j)) for i, j in zip(*closest_hash_pairs(hashes, 6, 10))} == exhaustive
    alike = np.full(5000, spread[0], np.uint64) ^ rng.integers(0, 2, 5000).astype(np.uint64)  # 0-1 bit apart
    i, _ = closest_hash_pairs(alike, 6, 10)
    assert len(i) <= 7 * 10 * 5000  # an exhaustive search lists 12.5 million pairs here
