"""Multi-label classification: CSV layouts, iterative stratification, thresholds, figures, end to end."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SHAPES, killed_at, run_cli, write_image


def _csv(folder, header: str, rows: list[str], images: int | None = None) -> str:
    for i in range(images if images is not None else len(rows)):
        write_image(os.path.join(folder, f"img_{i}.png"), (100, 100, 100), seed=i)
    path = os.path.join(folder, "data.csv")
    with open(path, "w") as f:
        f.write("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("cells, expected", [
    (["cat dog", "", "dog"], [("cat", "dog"), (), ("dog",)]),  # whitespace, and a negative image
    (["cat;tabby cat", "dog", ""], [("cat", "tabby cat"), ("dog",), ()]),  # ';' in a cell: names may hold spaces
    (["cat|dog", "dog | cat", "cat"], [("cat", "dog"), ("cat", "dog"), ("cat",)]),
])
def test_a_labels_column_is_split_as_the_file_says(tmp_path, cells, expected):
    from tltool.data.dataset import load_dataset

    path = _csv(tmp_path, "path,labels", [f"img_{i}.png,{cell}" for i, cell in enumerate(cells)])
    ds = load_dataset(path, val_split=0.0, progress=False)
    assert ds.multi_label and [s.label for s in sorted(ds.samples, key=lambda s: s.rel)] == expected
    assert ds.classes == sorted({n for labels in expected for n in labels})


def test_one_hot_columns_are_labels_and_a_label_column_stays_single_label(tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.errors import DatasetError

    hot = _csv(tmp_path / "hot", "path,cat,dog,split", ["img_0.png,1,1,train", "img_1.png,0,0,train",
                                                         "img_2.png,0,1,val"])
    ds = load_dataset(hot, progress=False)
    assert ds.multi_label and ds.classes == ["cat", "dog"]
    assert {s.rel: s.label for s in ds.samples} == {"img_0.png": ("cat", "dog"), "img_1.png": (), "img_2.png": ("dog",)}
    single = _csv(tmp_path / "single", "path,label", ["img_0.png,tabby cat", "img_1.png,dog", "img_2.png,dog"])
    ds = load_dataset(single, val_split=0.0, progress=False)
    assert not ds.multi_label and ds.classes == ["dog", "tabby cat"]
    odd = _csv(tmp_path / "odd", "path,cat,dog", ["img_0.png,1,2"], images=1)
    with pytest.raises(DatasetError, match="column 'dog' holds values other than 0 and 1"):
        load_dataset(odd, progress=False)


def test_the_task_follows_the_layout_and_a_mismatch_is_one_clear_error(tmp_path, tiny_data, multilabel_csv):
    from tltool.data.dataset import load_dataset
    from tltool.errors import TltoolError
    from tltool.tasks import task_for
    from tltool.workflows.resolving import default_recipe_for

    folders, csv = load_dataset(tiny_data, progress=False), load_dataset(multilabel_csv, progress=False)
    assert task_for("auto", folders).name == "single-label" and task_for("auto", csv).name == "multi-label"
    assert default_recipe_for(multilabel_csv) == "multi-label" and default_recipe_for(tiny_data) == "fine-tune"
    with pytest.raises(TltoolError, match="task: multi-label needs a CSV with a labels column"):
        task_for("multi-label", folders)
    with pytest.raises(TltoolError, match="task: single-label, but .* gives several labels per image"):
        task_for("single-label", csv)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nphases: [{name: head, epochs: 1, trainable: none}]\n"
                      "early_stopping: {monitor: val_accuracy}\n")
    result = run_cli("fit", multilabel_csv, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code != 0 and not (tmp_path / "run").exists()
    assert "early_stopping.monitor val_accuracy: a multi-label run logs val_loss or val_pr_auc" \
        in result.output
    recipe.write_text(recipe.read_text() + "task: multi-label\n")  # a recipe that says its task fails validation
    checked = run_cli("recipes", "validate", recipe)
    assert checked.exit_code != 0 and "early_stopping.monitor val_accuracy: a multi-label run logs" in checked.output
    from tltool.recipe import recipe_from_dict  # the monitor's old name reads as the new one

    old = recipe_from_dict({"name": "r", "phases": [{"name": "h", "epochs": 1, "trainable": "none"}],
                            "early_stopping": {"monitor": "val_mean_average_precision"}})
    assert old.early_stopping.monitor == "val_pr_auc"


def test_iterative_stratification_keeps_every_label_in_validation():
    from tltool.data.scan import Sample
    from tltool.data.split import iterative

    rng = np.random.default_rng(0)
    # 200 images, 2 common labels and 6 rare ones (2 to 4 images each, always beside a common label)
    samples = []
    for i in range(200):
        labels = {"common_a"} if i % 2 else {"common_b"}
        samples.append(Sample(f"/{i}", f"{i}.png", tuple(sorted(labels))))
    for r in range(6):
        for i in rng.choice(200, size=2 + r % 3, replace=False):
            samples[i].label = tuple(sorted({*samples[i].label, f"rare_{r}"}))
    warnings = iterative(samples, 0.2, 0.0, seed=1)
    val = [s for s in samples if s.split == "val"]
    assert not warnings and all(s.split in ("train", "val") for s in samples)
    assert {label for s in val for label in s.labels} == {label for s in samples for label in s.labels}
    assert abs(len(val) - 40) <= 2  # the ratio holds
    again = [Sample(s.path, s.rel, s.label) for s in samples]
    iterative(again, 0.2, 0.0, seed=1)
    assert [s.split for s in again] == [s.split for s in samples]  # seeded


def test_a_tuned_threshold_beats_one_half_where_the_best_one_is_known():
    from tltool.evaluation.multilabel import evaluate_multilabel, tune_thresholds

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2))
    # class 0: positives score 0.2-0.4, negatives 0-0.2, so the best threshold is near 0.2; class 1: 3 positives only
    p0 = np.where(y[:, 0] == 1, rng.uniform(0.2, 0.4, 400), rng.uniform(0.0, 0.19, 400))
    y[:, 1] = 0
    y[:3, 1] = 1
    probs = np.stack([p0, rng.uniform(0, 1, 400)], axis=1)
    thresholds = tune_thresholds(probs, y)
    assert 0.19 <= thresholds[0] <= 0.2 and thresholds[1] == 0.5  # too few positives: 0.5
    tuned, half = (evaluate_multilabel(y, probs, ["a", "b"], t).per_class["f1"][0] for t in (thresholds, [0.5, 0.5]))
    assert tuned == 1.0 and half == 0.0


def test_the_figures_are_scikit_learns():
    from sklearn.metrics import average_precision_score, f1_score, hamming_loss

    from tltool.evaluation.multilabel import evaluate_multilabel, pair_errors

    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.1], [0.7, 0.4, 0.2], [0.1, 0.3, 0.7], [0.4, 0.1, 0.1]])
    thresholds = np.array([0.5, 0.35, 0.5])
    found = evaluate_multilabel(y, probs, ["a", "b", "c"], thresholds)
    predicted = (probs >= thresholds).astype(int)
    m = found.metrics
    assert m["mean_average_precision"] == pytest.approx(np.mean([average_precision_score(y[:, c], probs[:, c])
                                                                 for c in range(3)]))
    assert m["micro_average_precision"] == pytest.approx(average_precision_score(y.ravel(), probs.ravel()))
    for average in ("micro", "macro"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, predicted, average=average, zero_division=0))
    assert m["samples_f1"] == pytest.approx(f1_score(y, predicted, average="samples", zero_division=1.0))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, predicted))
    assert m["exact_match"] == pytest.approx(np.mean((predicted == y).all(axis=1)))
    assert m["label_cardinality_true"] == pytest.approx(1.4) and m["label_cardinality_predicted"] == pytest.approx(1.2)
    assert list(found.per_class["f1"]) == pytest.approx(list(f1_score(y, predicted, average=None, zero_division=0)))
    pairs = pair_errors(found)  # image 4: a and c both missed, each while the other is present
    assert {tuple(r) for r in pairs[["error", "label", "while present"]].values} == {("false negative", "a", "c"),
                                                                                     ("false negative", "c", "a")}


def test_a_label_absent_from_the_split_is_left_out_of_every_per_label_average():
    from tltool.evaluation.multilabel import evaluate_multilabel

    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # label c has no positive here
    found = evaluate_multilabel(y, y * 0.9 + 0.05, ["a", "b", "c"], [0.5, 0.5, 0.5])  # every decision right
    m = found.metrics
    assert m["mean_average_precision"] == 1.0 and m["exact_match"] == 1.0
    assert m["macro_f1"] == 1.0 and m["labels_averaged"] == 2


def test_class_weights_weigh_the_positives_of_rare_labels_in_the_loss(multilabel_csv):
    import keras

    from tltool.data.dataset import load_dataset
    from tltool.recipe import load_recipe
    from tltool.tasks import get_task
    from tltool.training.losses import PositiveWeightedCrossentropy

    task, ds = get_task("multi-label"), load_dataset(multilabel_csv, progress=False)
    recipe = load_recipe()
    assert task.class_weights(recipe.model_copy(update={"class_weight": "auto"}), ds) is None  # balanced labels
    for s in ds.split("train"):  # make "bar" rare
        if "bar" in s.labels and s.rel > "img_010":
            s.label = tuple(n for n in s.labels if n != "bar")
    weights = task.class_weights(recipe.model_copy(update={"class_weight": "auto"}), ds)
    counts, images = ds.counts()["train"], ds.images()["train"]
    assert weights[0] == pytest.approx(min(10.0, (images - counts["bar"]) / counts["bar"])) and weights[0] > 2
    loss = task.loss(recipe, weights)
    assert isinstance(loss, PositiveWeightedCrossentropy)
    y, p = np.array([[1.0, 0.0, 1.0]]), np.array([[0.3, 0.2, 0.9]])
    expected = -np.mean([weights[0] * np.log(0.3), np.log(0.8), weights[2] * np.log(0.9)])
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-5)
    assert float(task.loss(recipe)(y, p)) == pytest.approx(float(keras.losses.binary_crossentropy(y, p)[0]), rel=1e-5)


def test_predict_prints_the_labels_above_their_thresholds_or_no_label():
    from tltool.tasks import get_task

    task = get_task("multi-label").decided({"thresholds": [0.5, 0.9, 0.3]})
    rows = task.prediction_rows(["a.jpg", "b.jpg"], np.array([[0.971, 0.88, 0.2], [0.1, 0.2, 0.1]]),
                                ["cat", "sofa", "dog"], top_k=5)
    assert task.format_rows(rows) == ["a.jpg: cat 97.1%", "b.jpg: no label"]
    assert task.json_rows(rows)[0] == {"path": "a.jpg", "labels": ["cat"],
                                       "probabilities": {"cat": 0.971, "sofa": 0.88, "dog": 0.2}}
    table = task.csv_rows(rows)
    assert list(table.columns) == ["path", "labels", "cat", "sofa", "dog"] and list(table["labels"]) == ["cat", ""]
    assert task.metadata() == {"task": "multi-label", "thresholds": [0.5, 0.9, 0.3]}


@pytest.mark.slow
def test_a_multi_label_run_fits_evaluates_predicts_and_exports_from_the_command_line(multilabel_csv, backbone_file,
                                                                                      tmp_path):
    import onnx
    import tensorflow as tf

    run = tmp_path / "run"
    result = run_cli("fit", multilabel_csv, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "fine-tune-top", "--epochs", 1, "--out", run)
    assert result.exit_code == 0, result.output
    assert "several labels per image" in result.output and "decision: a threshold per class" in result.output
    history = pd.read_csv(run / "history.csv")
    assert "val_pr_auc" in history.columns and len(history) == 2
    index = pd.read_csv(run / "data" / "index.csv", keep_default_na=False)
    assert list(index.columns) == ["path", "labels", "split", "sha1"] and "disc; square" in set(index["labels"])
    assert {n.strip() for cell in index[index["split"] == "val"]["labels"] for n in cell.split(";")} - {""} == \
        set(SHAPES)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("mean_average_precision", "micro_average_precision", "micro_f1", "macro_f1", "samples_f1",
                "exact_match", "hamming_loss", "label_cardinality_true", "label_cardinality_predicted"):
        assert isinstance(metrics[key], float), key
    thresholds = json.loads((run / "decision.json").read_text())["thresholds"]
    classes = json.loads((run / "classes.json").read_text())
    assert len(thresholds) == 3 and [classes[str(i)] for i in range(3)] == sorted(SHAPES)
    per_class = pd.read_csv(run / "per_class.csv")
    assert list(per_class["threshold"]) == pytest.approx(thresholds)
    for name in ("precision_recall.png", "most_wrong.png", "pair_errors.csv", "report.html"):
        assert (run / name).is_file(), name
    # The served model decides as the run does.
    served = tf.saved_model.load(str(run / "saved_model"))
    image = open(os.path.join(os.path.dirname(multilabel_csv), "img_007.png"), "rb").read()
    out = served.serve_bytes(tf.constant([image]))
    probs = out["probabilities"].numpy()[0]
    assert out["labels"].dtype == tf.bool and list(out["labels"].numpy()[0]) == list(probs >= np.array(thresholds))
    names = [n for n, on in zip(sorted(SHAPES), probs >= np.array(thresholds)) if on]
    assert out["label_names"].numpy()[0].decode() == "; ".join(names)
    predicted = run_cli("predict", run, os.path.join(os.path.dirname(multilabel_csv), "img_007.png"),
                        "--output", tmp_path / "p.json")
    assert predicted.exit_code == 0, predicted.output
    assert set(json.loads((tmp_path / "p.json").read_text())["predictions"][0]["labels"]) == set(names)
    # A .keras file with only classes.json beside it cannot say it is multi-label: refused, not read as softmax.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.keras", "classes.json"):
        shutil.copy(run / name, bare / name)
    refused = run_cli("predict", bare / "model.keras", os.path.join(os.path.dirname(multilabel_csv), "img_007.png"))
    assert refused.exit_code == 2 and "its output is a sigmoid (several labels per image)" in refused.output
    # explain: a row and an overlay per label the model decides for each image.
    images = [os.path.join(os.path.dirname(multilabel_csv), f"img_{i:03d}.png") for i in (3, 5, 7)]
    assert run_cli("predict", run, *images, "--output", tmp_path / "three.json").exit_code == 0
    decided = {p["path"]: set(p["labels"]) for p in json.loads((tmp_path / "three.json").read_text())["predictions"]}
    explained = run_cli("explain", run, *images, "--out", tmp_path / "why")
    assert explained.exit_code == 0, explained.output
    table = pd.read_csv(tmp_path / "why" / "explanations.csv")
    assert len(table) >= 1
    assert {p: set(table[table["path"] == p]["class"]) for p in images if decided[p]} == \
        {p: labels for p, labels in decided.items() if labels}
    for _, row in table.iterrows():
        name = os.path.splitext(os.path.basename(row["path"]))[0]
        assert row["overlay"] == f"{name}__{row['class']}.png" and (tmp_path / "why" / row["overlay"]).is_file()
    # Every kind of file carries the thresholds and is checked on its label decisions and mAP: ONNX's metadata,
    # and the sidecar that LiteRT and .keras files share (float litert and litert-fp16 write the sidecar as
    # int8 does and go through the same check: test_export_formats runs them).
    for fmt, file in (("onnx", "model.onnx"), ("litert-int8", "model_int8.tflite"), ("keras", "model.keras")):
        exported = run_cli("export", run, "--format", fmt)
        assert exported.exit_code == 0, exported.output
        report = json.loads((run / "export" / "export_report.json").read_text())[fmt]
        assert report["label_agreement"] >= (0.9 if fmt == "litert-int8" else 1.0), report
        path = run / "export" / file
        info = json.loads(onnx.load(str(path)).metadata_props[0].value) if fmt == "onnx" else \
            json.loads(open(str(path) + ".json").read())
        assert info["task"] == "multi-label" and info["thresholds"] == thresholds, fmt
    evaluated = run_cli("evaluate", run / "export" / "model.onnx", multilabel_csv, "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["samples"] == 48


@pytest.mark.slow
def test_a_killed_multi_label_run_resumes_to_the_same_thresholds_and_report(multilabel_csv, backbone_file, tmp_path):
    import signal

    run = tmp_path / "run"
    code = killed_at("export", "fit", multilabel_csv, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", "linear-probe", "--epochs", 2, "--out", run)
    assert code == -signal.SIGKILL and not (run / "model.keras").exists()
    tuned = json.loads((run / "decision.json").read_text())["thresholds"]  # tuned before the pause
    result = run_cli("fit", "--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "decision.json").read_text())["thresholds"] == pytest.approx(tuned)
    assert "mean_average_precision" in json.loads((run / "metrics.json").read_text())
    assert (run / "saved_model" / "saved_model.pb").is_file()


def test_tuned_thresholds_are_those_of_an_exhaustive_search():
    from tltool.evaluation.multilabel import tune_thresholds

    def exhaustive(y, p):  # every midpoint and 0.5, scored one by one
        values = np.unique(p)
        candidates = np.unique(np.concatenate([(values[1:] + values[:-1]) / 2, [0.5]]))
        f1 = [2 * (y & (p >= t)).sum() / max(1, y.sum() + (p >= t).sum()) for t in candidates]
        best = np.flatnonzero(np.isclose(f1, max(f1)))
        return candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]]

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (300, 4)).astype(bool)
    probs = np.clip(np.round(y * rng.uniform(0.2, 0.9, (300, 4)) + rng.uniform(0, 0.4, (300, 4)), 2), 0, 1)
    found = tune_thresholds(probs, y)
    assert list(found) == pytest.approx([exhaustive(y[:, c], probs[:, c]) for c in range(4)])


def test_the_multi_label_report_gives_test_time_augmentation_beside_the_plain_figures(tmp_path):
    from tltool.evaluation.report import ReportContext
    from tltool.tasks import get_task

    task = get_task("multi-label")
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    evaluation = task.evaluate(y, np.clip(y * 0.8 + 0.1, 0, 1), ["a", "b"])
    tta = {"views": 3, "names": ["plain", "flip", "crop"],
           **task.headline(task.evaluate(y, np.full((4, 2), 0.6), ["a", "b"]).metrics)}
    context = ReportContext("t", "m", "val", str(tmp_path), [f"{i}.png" for i in range(4)], tta=tta)
    overview = dict(task.write_files(str(tmp_path), evaluation, context).overview)
    assert overview["test-time augmentation"].startswith("3 views: mAP 0.5000 (-0.5000), micro-F1 0.6667")


def test_inspect_shows_the_split_that_fit_makes_with_the_datas_own_recipe(multilabel_csv):
    from tltool.data.dataset import load_dataset
    from tltool.recipe import load_recipe

    shown = json.loads(run_cli("inspect", multilabel_csv, "--json").output)["images"]
    data = load_recipe("multi-label").data  # what fit takes for such a CSV, test split included
    fit_makes = load_dataset(multilabel_csv, data.val_split, data.test_split, progress=False).images()
    assert shown == fit_makes and shown["test"] > 0


def test_per_class_temperatures_undo_a_known_overconfidence_and_the_layer_applies_them_as_numpy_does():
    import keras

    from tltool.evaluation.multilabel import apply_temperatures, binary_log_loss, fit_temperatures
    from tltool.models.layers import ClassTemperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 2))
    y = (rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))).astype(float)  # calibrated at T = 1
    probs = 1 / (1 + np.exp(-np.stack([3 * logits[:, 0], logits[:, 1] / 2], axis=1)))  # 3x sharp, 2x soft
    temperatures = fit_temperatures(probs, y)
    assert temperatures[0] == pytest.approx(3.0, rel=0.1) and temperatures[1] == pytest.approx(0.5, rel=0.1)
    calibrated = apply_temperatures(probs, temperatures)
    assert binary_log_loss(calibrated, y) < binary_log_loss(probs, y)
    order = np.argsort(probs[:, 0], kind="stable")
    assert (np.diff(calibrated[order, 0]) >= 0).all()  # the ranking never changes
    layer = ClassTemperature(list(temperatures))
    np.testing.assert_allclose(np.asarray(layer(keras.ops.convert_to_tensor(probs[:50], "float32"))),
                               calibrated[:50], atol=1e-5)


@pytest.mark.slow
def test_thresholds_are_tuned_on_the_validation_split_and_never_see_test(backbone_file, tmp_path):
    from tltool.data.dataset import load_dataset
    from tltool.evaluation.multilabel import tune_thresholds
    from tltool.models.registry import get_backbone
    from tltool.recipe import recipe_from_dict
    from tltool.runs.run import Run
    from tltool.serving.loading import predict_images
    from tltool.tasks import get_task
    from tltool.training.session import Session
    from tltool.training.setup import prepare
    from tltool.workflows.finishing import decide

    from conftest import make_multilabel

    csv = make_multilabel(tmp_path / "data", images=96)
    rows = open(csv).read().splitlines()
    split = ["train", "val", "test"]
    with open(csv, "w") as f:  # every label combination in each split, so each split's thresholds can differ
        f.write(rows[0] + ",split\n" + "".join(f"{r},{split[i // 8 % 3]}\n" for i, r in enumerate(rows[1:])))
    recipe = recipe_from_dict({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "task": "multi-label",
                               "phases": [{"name": "head", "epochs": 1, "trainable": "none"}]})
    dataset = load_dataset(csv, progress=False)
    task = get_task("multi-label")
    session = Session(prepare(recipe, get_backbone("vgg16"), dataset, task), Run.create(str(tmp_path / "run")))
    decided = decide(session, session.clf.inference)

    def tuned_on(name):
        samples = dataset.split(name)
        probs, kept = predict_images(session.clf.inference, [s.path for s in samples], 32, "stretch")
        return tune_thresholds(probs, task.targets([samples[i].label for i in kept], dataset.classes))

    assert list(decided.thresholds) == pytest.approx(list(tuned_on("val")), abs=1e-6)
    assert list(tuned_on("test")) != pytest.approx(list(tuned_on("val")), abs=1e-6)  # test would have moved them
