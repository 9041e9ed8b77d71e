"""`tltool evaluate` and `tltool predict` on a real fitted run."""

import base64
import io
import json
import os
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import COLOURS, make_dataset, run_cli, write_image

EVALUATION_FILES = ["per_class.csv", "metrics.json", "confusion_matrix.csv", "predictions.csv", "misclassified.csv",
                    "most_confused.csv", "confusion_matrix.png", "per_class_f1.png", "curves.png",
                    "misclassified.png", "report.md", "report.html"]
METRICS = ["accuracy", "top3_accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
           "weighted_recall", "weighted_f1", "balanced_accuracy", "log_loss", "expected_calibration_error"]


@pytest.fixture(scope="module")
def evaluation(fitted_run, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "all"
    result = run_cli("evaluate", fitted_run, tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    return str(out), result.output


def test_evaluate_writes_every_file_and_they_agree(evaluation):
    folder, _ = evaluation
    assert [f for f in EVALUATION_FILES if not os.path.isfile(os.path.join(folder, f))] == []
    per_class = pd.read_csv(os.path.join(folder, "per_class.csv"))
    confusion = pd.read_csv(os.path.join(folder, "confusion_matrix.csv"), index_col=0)
    predictions = pd.read_csv(os.path.join(folder, "predictions.csv"))
    assert per_class["support"].sum() == len(predictions) == 24
    assert confusion.sum(axis=1).tolist() == per_class["support"].tolist()
    recount = pd.crosstab(predictions["true"], predictions["predicted"]).reindex(
        index=confusion.index, columns=confusion.columns, fill_value=0)
    assert (recount.values == confusion.values).all()
    assert (predictions["correct"] == (predictions["true"] == predictions["predicted"])).all()
    assert {"path", "true", "predicted", "confidence", "top3"} <= set(predictions.columns)
    mistakes = pd.read_csv(os.path.join(folder, "misclassified.csv"))
    assert len(mistakes) == (~predictions["correct"]).sum()
    assert mistakes["confidence"].is_monotonic_decreasing
    confused = pd.read_csv(os.path.join(folder, "most_confused.csv"))
    off_diagonal = confusion.values.sum() - np.trace(confusion.values)
    assert confused["count"].sum() == off_diagonal and confused["count"].is_monotonic_decreasing
    metrics = json.load(open(os.path.join(folder, "metrics.json")))
    assert [m for m in METRICS if m not in metrics] == [] and metrics["samples"] == 24
    assert metrics["accuracy"] == pytest.approx(predictions["correct"].mean())
    assert "top3_recall" in per_class.columns


def test_html_report_is_self_contained_and_its_images_decode(evaluation):
    folder, _ = evaluation

    class Images(HTMLParser):
        sources = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    text = open(os.path.join(folder, "report.html"), encoding="utf-8").read()
    parser.feed(text)
    assert len(parser.sources) == 4
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.load()
        assert image.width > 100 and image.height > 100
    for section in ("Overall", "Per class (worst first)", "Most confused pairs", "fine-tune", "vgg16"):
        assert section in text
    markdown = open(os.path.join(folder, "report.md"), encoding="utf-8").read()
    assert "![confusion_matrix.png](confusion_matrix.png)" in markdown and "| class | precision |" in markdown


def test_evaluate_prints_the_table_worst_first(evaluation):
    _, output = evaluation
    lines = [line for line in output.splitlines() if line.split()[:1] and line.split()[0] in COLOURS]
    f1 = [float(line.split()[3]) for line in lines]
    assert len(lines) == 3 and f1 == sorted(f1)
    assert "report.html" in output


def test_fit_writes_the_same_report_for_its_split(fitted_run):
    assert [f for f in EVALUATION_FILES if not os.path.isfile(os.path.join(fitted_run, f))] == []


def test_a_report_on_the_validation_split_says_what_was_tuned_on_it(fitted_run, evaluation):
    from tltool.recipe import load_recipe

    with open(os.path.join(fitted_run, "report.md")) as f:
        assert "tuned on these images" in f.read()  # the tiny run has no test split
    with open(os.path.join(evaluation[0], "report.md")) as f:
        assert "tuned on these images" not in f.read()  # evaluate on other data
    assert load_recipe("multi-label").data.test_split > 0  # its thresholds are tuned on val: it reports on test


def test_evaluate_on_the_runs_split_equals_what_fit_wrote(fitted_run, tiny_data, tmp_path):
    result = run_cli("evaluate", fitted_run, tiny_data, "--split", "val", "--out", tmp_path / "val")
    assert result.exit_code == 0, result.output
    again = json.load(open(tmp_path / "val" / "metrics.json"))
    original = json.load(open(os.path.join(fitted_run, "metrics.json")))
    assert again.keys() == original.keys()
    for key, value in original.items():
        assert again[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


def test_savedmodel_and_keras_file_predict_the_same(fitted_run, tiny_data, tmp_path):
    for model, name in ((os.path.join(fitted_run, "saved_model"), "sm.csv"), (os.path.join(fitted_run, "model.keras"), "k.csv")):
        result = run_cli("predict", model, tiny_data, "--top-k", 3, "--output", tmp_path / name)
        assert result.exit_code == 0, result.output
    saved, keras_file = pd.read_csv(tmp_path / "sm.csv"), pd.read_csv(tmp_path / "k.csv")
    assert len(saved) == 24 and saved["path"].tolist() == keras_file["path"].tolist()
    assert saved["top1"].tolist() == keras_file["top1"].tolist()
    np.testing.assert_allclose(saved["top1_probability"], keras_file["top1_probability"], atol=1e-4)


def test_predict_prints_top_k_and_writes_json(fitted_run, tiny_data, tmp_path):
    photo = os.path.join(tiny_data, "sky", "sky_0.png")
    result = run_cli("predict", fitted_run, photo, "--top-k", 2, "--output", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"{photo}: ") and first.count("%") == 2
    payload = json.load(open(tmp_path / "p.json"))
    top = payload["predictions"][0]["top"]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    assert sum(t["probability"] for t in top) <= 1.0 + 1e-6


def test_predict_skips_unreadable_files_with_a_reason(fitted_run, tmp_path):
    folder = tmp_path / "mixed"
    write_image(str(folder / "good.png"), COLOURS["leaf"])
    write_image(str(folder / "sub" / "also good.jpg"), COLOURS["apple"])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden.png").write_bytes(b"")
    result = run_cli("predict", fitted_run, folder, "--output", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.jpg: truncated" in result.output
    assert "notes.txt: not an image" in result.output
    table = pd.read_csv(tmp_path / "out.csv")
    assert sorted(os.path.basename(p) for p in table["path"]) == ["also good.jpg", "good.png"]


def test_predict_with_nothing_readable_fails(fitted_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("predict", fitted_run, tmp_path / "empty")
    assert result.exit_code == 2 and "no image could be read" in result.output


@pytest.mark.parametrize("call, flag", [("explain", "--batch-size"), ("predict", "--top-k"), ("evaluate", "--tta"),
                                        ("audit", "--batch-size"), ("export", "--calibration-images")])
def test_a_count_below_one_is_the_same_one_line_error_from_python_and_the_command_line(call, flag, tmp_path):
    import tltool
    from tltool.errors import TltoolError

    keyword = flag[2:].replace("-", "_")
    args = {"explain": ("run", ["a.png"]), "predict": ("run", ["a.png"]), "evaluate": ("run", "data"),
            "audit": ("data",), "export": ("run", "onnx")}[call]
    with pytest.raises(TltoolError, match=f"^{flag} 0: give 1 or more$"):
        getattr(tltool, call)(*args, **{keyword: 0})
    cli_args = {"explain": ["run", "a.png"], "predict": ["run", "a.png"], "evaluate": ["run", "data"],
                "audit": ["data"], "export": ["run", "--format", "onnx"]}[call]
    result = run_cli(call, *cli_args, flag, 0)
    assert result.exit_code == 2 and f"{flag} 0: give 1 or more" in result.output


@pytest.mark.parametrize("case", ["missing", "unfinished", "not a model"])
def test_bad_model_paths(case, tiny_data, tmp_path):
    path = tmp_path / "thing"
    if case == "unfinished":
        path.mkdir()
        (path / ".tltool-run").write_text("{}\n")
    elif case == "not a model":
        path.mkdir()
    result = run_cli("evaluate", path, tiny_data)
    assert result.exit_code == 2 and "Traceback" not in result.output
    expected = {"missing": "no such file or folder", "unfinished": "did not finish", "not a model": "not a run directory"}
    assert expected[case] in result.output


def test_dataset_with_unknown_classes_is_refused(fitted_run, tmp_path):
    data = make_dataset(tmp_path / "zoo", per_class=2, classes={"zebra": (0, 0, 0), "sky": (40, 60, 210)})
    result = run_cli("evaluate", fitted_run, data)
    assert result.exit_code == 2
    assert "classes the model does not know: zebra" in result.output and "apple, leaf, sky" in result.output


def test_corrupt_image_in_evaluation_data_is_reported_not_evaluated(fitted_run, tmp_path):
    data = make_dataset(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "leaf" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run_cli("evaluate", fitted_run, data, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert json.load(open(tmp_path / "ev" / "metrics.json"))["samples"] == 6
    assert "leaf/bad.png" in open(tmp_path / "ev" / "report.md").read()


def test_an_earlier_evaluation_is_never_overwritten(fitted_run, tiny_data, evaluation, tmp_path):
    folder, _ = evaluation
    before = open(os.path.join(folder, "metrics.json")).read()
    result = run_cli("evaluate", fitted_run, tiny_data, "--out", folder)
    assert result.exit_code == 2 and "never overwritten" in result.output
    assert open(os.path.join(folder, "metrics.json")).read() == before
    import shutil

    run = tmp_path / "run"  # a copy of the run's model files: the shared fitted run stays as fit left it
    shutil.copytree(fitted_run, run, ignore=shutil.ignore_patterns("checkpoints", "saved_model", "evaluations"))
    first = run_cli("evaluate", run, tiny_data)
    second = run_cli("evaluate", run, tiny_data)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    folders = sorted(os.listdir(run / "evaluations"))
    assert len(folders) == 2 and folders[0].endswith("-tiny") and folders[1] == folders[0] + "-2"


def test_many_classes_stay_readable(tmp_path):
    from tltool.evaluation.metrics import evaluate_probs, format_per_class
    from tltool.evaluation.plots import _label_layout, confusion_matrix_png

    classes = [f"breed_{i:03d}" for i in range(120)]
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(120), 3)
    probs = rng.dirichlet(np.ones(120), size=len(y))
    probs[np.arange(len(y)), y] += 1.0
    evaluation = evaluate_probs(y, probs / probs.sum(1, keepdims=True), classes)
    text = format_per_class(evaluation.per_class, limit=20)
    assert len(text.splitlines()) == 2 + 20 + 1 and "100 more classes" in text
    path = tmp_path / "cm.png"
    confusion_matrix_png(evaluation.confusion, str(path))
    width, height = Image.open(path).size
    assert 2000 < width <= 4500 and 1000 < height <= 2300
    every, size = _label_layout(120, 22)  # the confusion matrix's side for 120 classes
    assert every == 1 and size >= 8  # every class labelled, in a legible font
    assert _label_layout(1000, 22) == (5, 5.0)  # beyond that, labels are thinned, never shrunk below 5 pt


def test_export_tflite_is_litert_and_predicts_like_the_keras_model(fitted_run, tmp_path):
    import tltool
    from tltool.serving.runtimes import load

    out = tmp_path / "m.tflite"
    result = run_cli("export", fitted_run, "--format", "tflite", "--out", out, "--no-verify")
    assert result.exit_code == 0, result.output
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).round().astype("float32")
    info, forward = load(str(out))  # ai-edge-litert's interpreter, not the deprecated tf.lite one
    assert info["format"] == "litert"
    np.testing.assert_allclose(forward(images), tltool.load_model(fitted_run)(images), atol=1e-4)
    again = run_cli("export", fitted_run, "--format", "tflite", "--out", out)
    assert again.exit_code == 2 and "never replaced" in again.output
    assert f"error: {out}: exists" in again.output  # the file first, and no "choose another --out" for a flag
    assert "choose another --out" not in again.output  # that the user may never have passed


def test_export_savedmodel_and_keras_copies(fitted_run, tmp_path):
    for fmt, name in (("savedmodel", "sm"), ("keras", "copy.keras")):
        result = run_cli("export", fitted_run, "--format", fmt, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "sm" / "assets" / "classes.json").is_file() and (tmp_path / "copy.keras").is_file()
    refused = run_cli("export", os.path.join(fitted_run, "saved_model"))
    assert refused.exit_code == 2 and "already exported" in refused.output


def test_report_pictures_leave_a_notebooks_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from tltool.evaluation.plots import confusion_matrix_png

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        confusion = pd.DataFrame([[3, 1], [0, 4]], index=["a", "b"], columns=["a", "b"])
        confusion_matrix_png(confusion, str(tmp_path / "c.png"))
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_f1_chart_zooms_in_when_every_class_is_good():
    from tltool.evaluation.plots import f1_axis

    assert f1_axis([0.95, 0.99, 1.0]) == (0.9, 1.0)  # the differences stay visible
    assert f1_axis([0.0, 0.5]) == (0.0, 1.0)


@pytest.mark.parametrize("mistakes, width", [(1, 300), (3, 900), (9, 1200)])
def test_the_gallery_of_mistakes_is_as_wide_as_what_it_shows(tmp_path, mistakes, width):
    from tltool.evaluation.plots import misclassified_png

    for i in range(mistakes):
        write_image(str(tmp_path / f"{i}.png"), (200, 30, 30), seed=i)
    rows = pd.DataFrame({"path": [f"{i}.png" for i in range(mistakes)], "true": "apple", "predicted": "sky",
                         "confidence": 0.9})
    misclassified_png(rows, str(tmp_path), str(tmp_path / "m.png"))
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.width == width
