"""ONNX and LiteRT exports: written with their metadata, run in their own runtime, checked against Keras."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import run_cli, write_image

pytestmark = pytest.mark.slow

FORMATS = {"onnx": "m.onnx", "litert": "m.tflite", "litert-fp16": "m16.tflite", "litert-int8": "m8.tflite"}


@pytest.fixture(scope="module")
def exported(fitted_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    outputs = {}
    for fmt, name in FORMATS.items():
        extra = ["--int8-io", "uint8", "--calibration-images", "8"] if fmt == "litert-int8" else []
        result = run_cli("export", fitted_run, "--format", fmt, "--out", folder / name, *extra)
        assert result.exit_code == 0, result.output
        outputs[fmt] = result.output
    return folder, outputs


@pytest.fixture(scope="module")
def pixels_and_expected(fitted_run, tiny_data):
    import tltool
    from tltool.data.contract import prepare_file

    files = [os.path.join(tiny_data, c, f"{c}_{i}.png") for c in ("apple", "leaf", "sky") for i in (0, 2)]
    pixels = np.stack([prepare_file(f, 32, "stretch") for f in files]).astype("float32")
    return files, pixels, np.asarray(tltool.load_model(fitted_run)(pixels))


def test_each_export_is_checked_and_reported(exported):
    folder, outputs = exported
    assert not (folder / "export_report.json").exists()  # a folder of the user's: each file's report has its name
    report = {fmt: json.load(open(folder / f"{name}.export_report.json"))[fmt] for fmt, name in FORMATS.items()}
    for fmt in ("onnx", "litert"):
        assert report[fmt]["top1_agreement"] == 1.0 and report[fmt]["max_probability_difference"] < 1e-4, fmt
    for fmt, entry in report.items():
        assert entry["passed"] and entry["images"] == 6 and entry["split"] == "val"
        assert entry["latency_ms_per_image"]["batch_1"] > 0 and entry["latency_ms_per_image"]["batch_32"] > 0
        assert f"{fmt}: " in outputs[fmt] and "top-1 agrees with Keras on" in outputs[fmt]
    assert report["litert-int8"]["bytes"] < 0.35 * report["litert"]["bytes"]
    assert isinstance(report["litert-int8"]["float_layers"], list)
    assert 0 <= report["litert-int8"]["full_integer_calibration_agreement"] <= 1
    assert 0 <= report["litert-int8"]["calibration_agreement"] <= 1
    assert "int8: wrote a " in outputs["litert-int8"] and "of 8 calibration images" in outputs["litert-int8"]
    assert "(full integer:" not in outputs["litert-int8"]  # which file was kept, and why, in words
    assert report["litert-fp16"]["bytes"] < 0.6 * report["litert"]["bytes"]


def test_files_carry_what_it_takes_to_use_them(exported):
    import onnx

    folder, _ = exported
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(folder / "m.onnx")).metadata_props}["tltool"]
    assert meta["classes"] == ["apple", "leaf", "sky"] and meta["image_size"] == 32 and meta["aspect"] == "stretch"
    assert meta["input_contract"] == 2 and meta["input"]["shape"] == [None, 32, 32, 3]
    sidecar = json.load(open(folder / "m8.tflite.json"))
    assert sidecar["format"] == "litert-int8" and sidecar["input"]["dtype"] == "uint8"


RUNTIME_ONLY = r"""
import json, sys
sys.modules["tensorflow"] = None  # importing TensorFlow now fails: only the runtime may run the file
import numpy as np
path, pixels = sys.argv[1], np.load(sys.argv[2])
if path.endswith(".onnx"):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: pixels})[0]
else:
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], pixels.shape)
    interpreter.allocate_tensors()
    if source["dtype"] != np.float32:
        scale, zero = source["quantization"]
        pixels = np.clip(np.round(pixels / scale + zero), 0, 255).astype(source["dtype"])
    interpreter.set_tensor(source["index"], pixels)
    interpreter.invoke()
    out = interpreter.get_tensor(target["index"]).astype(np.float32)
    if target["dtype"] != np.float32:
        scale, zero = target["quantization"]
        out = (out - zero) * scale
print(json.dumps(out.tolist()))
"""


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_files_run_in_their_runtime_without_tensorflow(exported, pixels_and_expected, fmt, tmp_path):
    folder, _ = exported
    _, pixels, expected = pixels_and_expected
    np.save(tmp_path / "pixels.npy", pixels)
    done = subprocess.run([sys.executable, "-c", RUNTIME_ONLY, str(folder / FORMATS[fmt]), str(tmp_path / "pixels.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    probs = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    # int8 is calibrated on 8 images of a barely trained model: close, not equal (the benchmark measures accuracy)
    tolerance = {"onnx": 1e-5, "litert": 1e-5, "litert-fp16": 1e-2, "litert-int8": 0.1}[fmt]
    np.testing.assert_allclose(probs, expected, atol=tolerance)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.02)


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_predict_and_evaluate_take_exported_files(exported, pixels_and_expected, fitted_run, tiny_data, fmt, tmp_path):
    import tltool

    folder, _ = exported
    files, _, expected = pixels_and_expected
    rows, _, classes = tltool.predict(str(folder / FORMATS[fmt]), files)
    got = np.array([[p[c] for c in classes] for p in rows["probabilities"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    where, ours = tltool.evaluate(str(folder / FORMATS[fmt]), tiny_data, split="val", split_from=fitted_run)
    assert os.path.basename(where).endswith(f"-tiny-val-{fmt}")  # which format was evaluated, in the name
    _, keras_figures = tltool.evaluate(fitted_run, tiny_data, split="val", out=str(tmp_path / "k"))
    assert ours.metrics["accuracy"] == keras_figures.metrics["accuracy"]
    np.testing.assert_allclose(ours.probs, keras_figures.probs, atol=1e-5)


def test_a_missing_extra_names_the_pip_command(fitted_run, tmp_path):
    code = ("import sys; sys.modules['onnxruntime'] = None\nfrom tltool.cli import cli\n"
            f"cli(['export', {fitted_run!r}, '--format', 'onnx', '--out', {str(tmp_path / 'x.onnx')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: --format onnx needs the onnxruntime package: pip install 'tltool[export]'" in done.stderr


def _colour_run(folder, tiny_data, kernel):
    """A run directory whose model.keras tells the tiny classes apart by their mean colour."""
    import keras

    from tltool.runs.run import Run

    Run.create(str(folder))
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.layers[-1].set_weights([kernel, np.zeros(3, "float32")])
    model.save(str(folder / "model.keras"))
    json.dump({"0": "apple", "1": "leaf", "2": "sky"}, open(folder / "classes.json", "w"))
    yaml.safe_dump({"image_size": 32, "data": {"aspect": "stretch"}, "provenance": {"dataset": tiny_data}},
                   open(folder / "recipe.yaml", "w"))
    rows = [f"{c}/{c}_{i}{'.png' if i % 2 == 0 else '.jpg'},{c},{'val' if i < 4 else 'train'}"
            for c in ("apple", "leaf", "sky") for i in range(8)]
    (folder / "data" / "index.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return folder


def test_an_export_that_loses_accuracy_fails_and_is_kept(tiny_data, tmp_path):
    from tltool.errors import ExportCheckFailed
    from tltool.serving.checking import check
    from tltool.serving.loading import load_trained
    from tltool.tasks import get_task
    from tltool.workflows.exporting import export

    right = _colour_run(tmp_path / "right", tiny_data, np.eye(3, dtype="float32") * 0.1)
    wrong = _colour_run(tmp_path / "wrong", tiny_data, np.roll(np.eye(3, dtype="float32"), 1, axis=1) * 0.1)
    assert os.path.isfile(export(str(right), "onnx"))  # the right model passes its own check
    bad = export(str(wrong), "onnx", str(tmp_path / "bad.onnx"), verify=False)
    trained = load_trained(str(right))
    with pytest.raises(ExportCheckFailed, match="below the Keras model's"):
        check(trained, bad, "onnx", trained.run.split_files(), 1.0, get_task())
    assert os.path.isfile(bad)
    report = json.load(open(tmp_path / "export_report.json"))["onnx"]
    assert not report["passed"] and report["keras_accuracy"] == 1.0 and report["accuracy"] == 0.0
    assert check(trained, bad, "onnx", trained.run.split_files(), 101.0, get_task())["passed"]  # a looser threshold lets it pass


def test_an_out_with_another_ending_is_refused_in_one_line_naming_the_ending(fitted_run, tmp_path):
    result = run_cli("export", fitted_run, "--format", "litert", "--out", tmp_path / "model.litert")
    assert result.exit_code == 2
    assert f"a litert file ends with .tflite; give e.g. {tmp_path / 'model'}.tflite" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_checks_memory_does_not_grow_with_the_split(tiny_data, tmp_path):
    import tracemalloc

    from tltool.serving.checking import check
    from tltool.serving.loading import load_trained
    from tltool.tasks import get_task

    trained = load_trained(str(_colour_run(tmp_path / "run", tiny_data, np.eye(3, dtype="float32") * 0.1)))
    for i in range(2000):
        write_image(str(tmp_path / "images" / f"{i}.png"), (i % 255, 90, 200), seed=i)
    rows = [(str(tmp_path / "images" / f"{i}.png"), "apple") for i in range(2000)]

    for n in (40, 48):  # warm: every batch shape below (32, 8 and 16) traced before memory is measured
        check(trained, trained.source, "keras", {"val": rows[:n]}, 100.0, get_task())

    def peak(n):
        tracemalloc.start()
        check(trained, trained.source, "keras", {"val": rows[:n]}, 100.0, get_task())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    # Holding the split would add 1,800 images of 32 x 32 x 3 float32 (22 MB); what grows instead is
    # TensorFlow's bookkeeping per call (about 0.5 MB here), under a tenth of that.
    split_bytes = 1800 * 32 * 32 * 3 * 4
    assert peak(2000) - peak(200) < 0.1 * split_bytes


def test_int8_calibration_images_come_from_every_class():
    from tltool.serving.checking import calibration_sample

    rows = [(f"{label}/{i}.png", label) for label in "abc" for i in range(5)]  # class by class, as index.csv lists them
    assert calibration_sample(rows, 6) == ["a/0.png", "b/0.png", "c/0.png", "a/1.png", "b/1.png", "c/1.png"]
    assert sorted(calibration_sample(rows, 100)) == sorted(path for path, _ in rows)


def _outlier_model():
    """Channel 0 of `wide` spans thousands while the rest span a few units, and only the rest decide the class:
    int8 gives the whole tensor one scale, rounds the deciding channels to nothing and so ruins the model."""
    import keras

    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3))
    wide = keras.layers.Conv2D(8, 1, name="wide")
    x = keras.layers.GlobalAveragePooling2D()(wide(inputs))
    decide = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, decide(x))
    kernel = rng.normal(0, 0.02, (1, 1, 3, 8))
    kernel[..., 0] = 20
    wide.set_weights([kernel, -127.5 * kernel.sum(axis=(0, 1, 2))])  # centred: every class gets its share
    weights = rng.normal(0, 1, (8, 3))
    weights[0] = 0
    decide.set_weights([weights, np.zeros(3)])
    colours = rng.uniform(0, 255, (60, 1, 1, 3)) + rng.normal(0, 5, (60, 8, 8, 3))
    return model, np.clip(colours, 0, 255).astype("float32")


def test_int8_keeps_the_layers_it_ruins_in_float():
    import tensorflow as tf

    from tltool.serving.quantize import _interpreter, int8_model

    model, pixels = _outlier_model()
    signature = [tf.TensorSpec([None, 8, 8, 3], tf.float32)]
    representative = lambda: ([p[None]] for p in pixels)  # noqa: E731
    full = int8_model(model, signature, pixels, representative, float_layers="none")
    assert full.float_layers == [] and full.agreement == full.full_integer_agreement < 0.9
    mixed = int8_model(model, signature, pixels, representative)
    assert mixed.float_layers and mixed.agreement >= 0.99 and mixed.full_integer_agreement == full.agreement
    assert any("wide" in name for name in mixed.float_layers)

    def float_convolutions(flatbuffer):
        ops = _interpreter(flatbuffer)._get_ops_details()
        return [op for op in ops if op["op_name"] == "CONV_2D" and op["operand_types"][0] == np.float32]

    assert not float_convolutions(full.flatbuffer) and float_convolutions(mixed.flatbuffer)
    uint8 = int8_model(model, signature, pixels, representative, int8_io="uint8")
    assert _interpreter(uint8.flatbuffer).get_input_details()[0]["dtype"] == np.uint8


def test_bias_correction_takes_out_the_mean_shift_of_rounded_kernels():
    """Linear layers: after correction, kernels rounded as int8 leave every output channel's mean over the images
    close to the float model's; without, it moves. Leaving the block restores the model."""
    import keras

    from tltool.serving.quantize import _bias_corrected, _rounded

    rng = np.random.default_rng(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)  # a bias, no BatchNorm
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 1)(x)))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            gamma, beta, mean = rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n)
            layer.set_weights([gamma, beta, mean, rng.uniform(0.5, 2, n)])  # the last: the variance
    pixels = rng.uniform(0, 255, (16, 10, 10, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    exact = np.asarray(model(pixels))
    kernels = [layer for layer in model.layers if hasattr(layer, "kernel")]

    def rounded_output():
        saved = [np.asarray(layer.kernel) for layer in kernels]
        for layer in kernels:
            axes = (0, 1) if isinstance(layer, keras.layers.DepthwiseConv2D) else (0, 1, 2)
            layer.kernel.assign(_rounded(np.asarray(layer.kernel), axes))
        out = np.asarray(model(pixels))
        for layer, kernel in zip(kernels, saved):
            layer.kernel.assign(kernel)
        return out

    drift = np.abs((rounded_output() - exact).mean(axis=(0, 1, 2)))
    with _bias_corrected(model, pixels):
        corrected = np.abs((rounded_output() - exact).mean(axis=(0, 1, 2)))
    assert drift.max() > 0.1 and corrected.max() < drift.max() / 10  # not 0: the windows do not see every pixel alike
    for restored, original in zip(model.get_weights(), before):
        np.testing.assert_array_equal(restored, original)


def test_onnx_of_an_efficientnet_takes_the_image_only(tmp_path):
    """EfficientNet's adapted Normalization layer once became two extra ONNX inputs that no caller can feed."""
    import onnxruntime as ort

    from tltool.models.classifier import build_classifier
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head
    from tltool.serving.formats import export_onnx, model_info
    from tltool.tasks import get_task

    spec = get_backbone("efficientnetb0")
    model = build_classifier(spec.build(32, "none"), 3, 32, Head(), Augment(), 1).inference
    path = export_onnx(model, str(tmp_path / "m.onnx"), model_info(["a", "b", "c"], 32, "stretch", "efficientnetb0",
                                                                        get_task()))
    session = ort.InferenceSession(path)
    assert [i.name for i in session.get_inputs()] == ["image"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(session.run(None, {"image": pixels})[0], np.asarray(model(pixels)), atol=1e-5)


def test_a_format_without_an_operator_the_model_uses_is_refused_in_one_line_naming_it(tmp_path):
    import keras
    import tensorflow as tf

    from tltool.errors import TltoolError
    from tltool.serving.formats import export_litert, export_onnx, model_info
    from tltool.tasks import get_task

    class Igamma(keras.layers.Layer):  # an op that neither ONNX nor LiteRT's built-ins have
        def call(self, x):
            return tf.math.igamma(x + 1.0, x + 2.0)

    image = keras.Input((8, 8, 3))
    model = keras.Model(image, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(Igamma()(image))))
    info = model_info(["a", "b"], 8, "stretch", "test", get_task())
    for export, fmt, name in ((export_onnx, "onnx", "model.onnx"), (export_litert, "litert", "model.tflite")):
        path = tmp_path / name
        with pytest.raises(TltoolError, match=f"^--format {fmt}: the model uses the TensorFlow op Igamma, which "):
            export(model, str(path), info)
        assert not path.exists()  # nothing half-written
