"""The input contract: one way from file to model input, and every path agreeing on awkward files."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from conftest import run_cli

ROWS, COLS = np.mgrid[0:800, 0:1200]
# Not symmetric in any direction, so every rotation and flip changes it.
PHOTO = np.stack([ROWS * 255 // 800, COLS * 255 // 1200, ((ROWS // 100 + COLS // 150) % 3) * 110], -1).astype(np.uint8)


def encoded(image, fmt, **kwargs):
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def with_orientation(image, orientation, **kwargs):
    exif = image.getexif()
    exif[0x0112] = orientation
    return encoded(image, "JPEG", exif=exif.tobytes(), **kwargs)


def awkward_files(folder):
    """The fixture set of issue 9, written as real files; name -> path."""
    photo = Image.fromarray(PHOTO)
    small = photo.resize((150, 100))
    alpha = Image.fromarray(np.dstack([np.asarray(small), (np.arange(150)[None, :].repeat(100, 0) * 1.7).astype(np.uint8)]))
    transparent_left = np.dstack([np.asarray(small.quantize(200).convert("RGB")), np.full((100, 150), 255, np.uint8)])
    transparent_left[:, :20, 3] = 0
    files = {
        "large.jpg": encoded(photo, "JPEG", quality=92),
        "exif6.jpg": with_orientation(photo.resize((600, 400)), 6),
        "exif3.jpg": with_orientation(photo.resize((600, 400)), 3),
        "plain_for_exif6.jpg": encoded(photo.resize((600, 400)).transpose(Image.Transpose.ROTATE_270), "JPEG"),
        "gray.png": encoded(small.convert("L"), "PNG"),
        "palette.png": encoded(small.convert("P"), "PNG"),
        "rgba.png": encoded(alpha, "PNG"),
        "cmyk.jpg": encoded(small.convert("CMYK"), "JPEG"),
        "deep16.png": encoded(Image.fromarray((np.asarray(small.convert("L")).astype(np.uint16) * 257)), "PNG"),
        "tiny.png": encoded(small.resize((10, 10)), "PNG"),
        "scan.tif": encoded(small, "TIFF"),
        # transparent on the left edge, as rgba.png: GIF with a global and with a frame's local colour table
        "alpha.gif": encoded(Image.fromarray(transparent_left), "GIF"),
        "alpha_local.gif": encoded(Image.fromarray(transparent_left), "GIF", save_all=True, include_color_table=True,
                                   append_images=[Image.fromarray(transparent_left[::-1].copy())]),
        "alpha.webp": encoded(alpha, "WEBP", quality=90),
    }
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, data in files.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


# ------------------------------------------------------------ the decoder


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_in_graph_as_pillow_applies_it(orientation):
    import tensorflow as tf

    from tltool.data import contract

    data = with_orientation(Image.fromarray(PHOTO[::8, ::8]), orientation, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert int(contract.exif_orientation(tf.constant(data))) == orientation
    np.testing.assert_array_equal(contract.decode_bytes(tf.constant(data), 2000).numpy(), expected)


def test_big_endian_exif_is_read():
    import tensorflow as tf

    from tltool.data import contract

    # A hand-made Motorola-order APP1: TIFF header MM, one IFD entry (0x0112 SHORT 1 = 8).
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x08\x00\x00" + b"\x00" * 4
    app1 = b"\xff\xe1" + (len(tiff) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + tiff
    plain = encoded(Image.fromarray(PHOTO[::8, ::8]), "JPEG")
    data = plain[:2] + app1 + plain[2:]
    assert int(contract.exif_orientation(tf.constant(data))) == 8
    assert int(contract.exif_orientation(tf.constant(plain))) == 1


def test_tensorflow_decoder_follows_the_pillow_rules(tmp_path):
    """TF ops (used everywhere, served too) and Pillow (for TIFF & co.) give the same pixels."""
    import tensorflow as tf

    from tltool.data import contract
    from tltool.data.images import load_image

    paths = awkward_files(str(tmp_path))
    # JPEG chroma conversion of CMYK differs by rounding between the two libraries.
    tolerance = {"cmyk.jpg": 3, "rgba.png": 1}
    names = ("exif6.jpg", "exif3.jpg", "gray.png", "palette.png", "rgba.png", "cmyk.jpg", "deep16.png", "tiny.png",
             "alpha.gif", "alpha_local.gif", "alpha.webp")
    for name in names:
        ours = contract.decode_bytes(tf.io.read_file(paths[name]), 2000).numpy().astype(int)
        pillow = load_image(paths[name]).astype(int)
        assert ours.shape == pillow.shape, name
        assert np.abs(ours - pillow).max() <= tolerance.get(name, 0), name
    for name in ("rgba.png", "alpha.gif", "alpha_local.gif", "alpha.webp"):
        white_left = contract.decode_bytes(tf.io.read_file(paths[name]), 2000).numpy()[:, 0]
        assert white_left.min() >= 254, name  # alpha 0 on the left edge: composited on white


def test_large_jpeg_is_decoded_at_reduced_scale_keeping_the_short_side():
    import tensorflow as tf

    from tltool.data import contract

    data = tf.constant(encoded(Image.fromarray(PHOTO), "JPEG"))  # 1200 x 800
    shapes = {size: tuple(contract.decode_bytes(data, size).shape[:2]) for size in (96, 200, 201, 400, 401)}
    assert shapes == {96: (100, 150), 200: (200, 300), 201: (400, 600), 400: (400, 600), 401: (800, 1200)}


# ------------------------------------------------------------ parity of every path


def _sensitive_model_dir(folder, aspect):
    """A model folder whose probabilities move with every pixel and its position (no pooling)."""
    import keras

    from tltool.files import write_json
    from tltool.serving.formats import export_saved_model, model_info
    from tltool.tasks import get_task

    os.makedirs(folder)
    classes = ["apple", "leaf", "sky"]
    write_json(os.path.join(folder, "classes.json"), {str(i): c for i, c in enumerate(classes)})
    with open(os.path.join(folder, "recipe.yaml"), "w") as f:
        yaml.safe_dump({"image_size": 32, "data": {"aspect": aspect}}, f)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 127.5, -1.0), keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=3)),
    ])
    model.save(os.path.join(folder, "model.keras"))
    export_saved_model(model, os.path.join(folder, "saved_model"), model_info(classes, 32, aspect, "test", get_task()),
                       get_task())
    return folder


SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tltool.data.contract import read_pixels
out = {}
for run in json.loads(sys.argv[1]):
    model = tf.saved_model.load(run["dir"] + "/saved_model")
    size = run["size"]
    for path in run["files"]:
        by_bytes = None
        if not path.endswith(".tif"):  # TensorFlow cannot decode TIFF: callers convert it (README)
            by_bytes = model.serve_bytes(tf.constant([open(path, "rb").read()]))["probabilities"].numpy()[0].tolist()
        pixels = read_pixels(path, size)[None].astype("float32")
        by_pixels = model.signatures["serving_default"](images=tf.constant(pixels))["probabilities"].numpy()[0].tolist()
        out[run["dir"] + "|" + path] = {"bytes": by_bytes, "pixels": by_pixels}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_predict_evaluate_and_every_signature_agree_on_awkward_files(tmp_path):
    """Issue 9's parity check: predict, evaluate, serve_bytes and serving_default, for each aspect policy."""
    import tltool

    files = awkward_files(str(tmp_path / "data" / "apple"))
    names = sorted(files)
    runs, results = {}, {}
    for aspect in ("stretch", "crop", "pad"):
        run = _sensitive_model_dir(str(tmp_path / f"run-{aspect}"), aspect)
        runs[aspect] = run
        output = tmp_path / f"predict-{aspect}.json"
        result = run_cli("predict", run, *[files[n] for n in names], "--top-k", "3", "--output", output)
        assert result.exit_code == 0, result.output
        predicted = {os.path.basename(p["path"]): p["probabilities"] for p in json.loads(output.read_text())["predictions"]}
        folder, evaluation = tltool.evaluate(run, str(tmp_path / "data"), out=str(tmp_path / f"eval-{aspect}"))
        order = [os.path.basename(p) for p in
                 __import__("pandas").read_csv(os.path.join(folder, "predictions.csv"))["path"]]
        classes = evaluation.classes
        for aspect_name, probs in zip(order, evaluation.probs):
            results[(aspect, aspect_name)] = {"predict": [predicted[aspect_name][c] for c in classes],
                                              "evaluate": probs.tolist()}
    spec = [{"dir": runs[a], "size": 32, "files": [files[n] for n in names]} for a in runs]
    served = subprocess.run([sys.executable, "-c", SERVE, json.dumps(spec)], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert served.returncode == 0, served.stderr[-2000:]
    served = json.loads(served.stdout.strip().splitlines()[-1])
    worst = 0.0
    for aspect in runs:
        for name in names:
            got = results[(aspect, name)]
            paths = {**got, **{k: v for k, v in served[runs[aspect] + "|" + files[name]].items() if v is not None}}
            vectors = np.array(list(paths.values()))
            difference = float(np.abs(vectors - vectors[0]).max())
            worst = max(worst, difference)
            assert difference <= 1e-3, (aspect, name, paths)
    assert worst > 0  # the paths really are different code (a fresh process, other batching)
    # The check can fail: the model is sensitive enough that orientation, aspect and format matter.
    stretch = results[("stretch", "exif6.jpg")]["predict"]
    assert np.abs(np.subtract(stretch, results[("stretch", "large.jpg")]["predict"])).max() > 0.05
    assert np.abs(np.subtract(stretch, results[("crop", "exif6.jpg")]["predict"])).max() > 0.05
    plain = results[("stretch", "plain_for_exif6.jpg")]["predict"]
    assert np.abs(np.subtract(stretch, plain)).max() < 0.05  # rotated by EXIF == rotated in pixels (JPEG noise aside)
