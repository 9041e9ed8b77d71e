"""Speed features that must not change results: feature caching, lazy imports,
mixed precision and XLA on CPU."""

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli

HEAD_ONLY = """\
phases:
  - {name: head, epochs: 5, trainable: none, optimizer: {name: adam, learning_rate: 0.01}}
head: {dropout: 0.0}
augment: {flip: none}
early_stopping: null
class_weight: none
batch_size: 8
seed: 7
"""


def _fit_head(data, weights, out, cache, recipe_dir):
    recipe = recipe_dir / "head.yaml"
    recipe.write_text(HEAD_ONLY)
    flag = "--cache-features" if cache else "--no-cache-features"
    result = run_cli("fit", data, "-b", "vgg16", "--weights", weights, "--image-size", 32,
                     "--recipe", recipe, flag, "--out", out)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_cached_features_train_the_same_head_as_end_to_end(tiny_data, backbone_file, tmp_path):
    import keras

    import tltool.models.layers  # noqa: F401

    cached_log = _fit_head(tiny_data, backbone_file, tmp_path / "cached", True, tmp_path)
    plain_log = _fit_head(tiny_data, backbone_file, tmp_path / "plain", False, tmp_path)
    assert re.search(r"cached 18 features of dim 512 in [\d.]+ s \([\d.]+ MB in memory\)", cached_log)
    assert not re.search(r"cached \d+ features", plain_log) and "5 epoch(s) end to end" in plain_log
    models = [keras.models.load_model(str(tmp_path / name / "model.keras")) for name in ("cached", "plain")]
    kernels = [np.asarray(m.get_layer("predictions").kernel) for m in models]
    assert not np.allclose(kernels[0], 0)
    np.testing.assert_allclose(kernels[0], kernels[1], atol=1e-4)
    np.testing.assert_allclose(np.asarray(models[0].get_layer("predictions").bias),
                               np.asarray(models[1].get_layer("predictions").bias), atol=1e-4)
    images = np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(models[0].predict(images, verbose=0), models[1].predict(images, verbose=0), atol=1e-4)
    import pandas as pd

    histories = [pd.read_csv(tmp_path / name / "history.csv") for name in ("cached", "plain")]
    assert histories[0]["loss"].iloc[-1] < 0.9 * histories[0]["loss"].iloc[0]  # the head really learned
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-4)
    for name in ("cached", "plain"):  # the backbone itself is untouched by a frozen phase
        trained = keras.models.load_model(str(tmp_path / name / "model.keras")).get_layer("backbone")
        source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
        source.load_weights(backbone_file)
        for a, b in zip(source.weights, trained.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_augmentation_is_cached_as_several_views(tiny_data, backbone_file, tmp_path):
    recipe = tmp_path / "aug.yaml"
    recipe.write_text(HEAD_ONLY.replace("augment: {flip: none}", "augment: {flip: horizontal, contrast: 0.2, cached_views: 3}"))
    result = run_cli("fit", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                     "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert re.search(r"cached 18 features of dim 512 x 3 augmented views", result.output)


def test_views_cycle_by_epoch():
    import tensorflow as tf

    from tltool.training.features import FeatureCache

    cache = FeatureCache(np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2), np.arange(4) % 2, None, None,
                         lambda y: tf.one_hot(y, 2))
    seen = []
    for epoch in range(5):
        batches = cache.train_dataset(2, seed=1, window=4, epoch=epoch).take(2)  # one pass of 4 images
        features = np.concatenate([x.numpy() for x, _ in batches])
        seen.append(int(features.min()) // 8)
    assert seen == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("args", [["--help"], ["backbones"], ["recipes"], ["recipes", "show", "small-data"],
                                  ["recipes", "validate", "fine-tune-top", "--backbone", "resnet50"]])
@pytest.mark.slow
def test_quick_commands_do_not_import_tensorflow(args):
    code = ("import sys; from tltool.cli import cli\n"
            "try:\n    cli(%r, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('TF-LOADED' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'NO-TF')") % (args,)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("NO-TF")


@pytest.mark.slow
@pytest.mark.parametrize("precision,strategy", [("mixed_float16", "mirrored"), ("mixed_bfloat16", "default")])
def test_mixed_precision_trains_exports_and_leaves_the_callers_state(tiny_data, tmp_path, precision, strategy):
    import random

    import keras
    from keras.src.backend.tensorflow import trainer
    from keras.src.utils.rng_utils import get_random_seed
    from tensorflow.python.framework import random_seed

    import tltool.models.layers  # noqa: F401

    keras.utils.set_random_seed(4242)  # the caller's own seed: fit must leave it, and the policy, as they were
    expected = (random.random(), np.random.random_sample())
    keras.utils.set_random_seed(4242)
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    # A frozen backbone trained end to end: the loss-scaling optimizer and the float32 head, without the
    # cost of a backward pass through the backbone. Mirrored: one replica on CPU, patched Keras. MobileNet:
    # BatchNorm under a mixed policy, and quicker to trace than MobileNetV2.
    result = run_cli("fit", tiny_data, "-b", "mobilenet", "--weights", "none", "--image-size", 32, "--epochs", 1,
                     "--recipe", "linear-probe", "--no-cache-features", "--precision", precision,
                     "--strategy", strategy, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert keras.config.dtype_policy().name == "float32"
    assert (random.random(), np.random.random_sample()) == expected
    assert get_random_seed() == 4242 and random_seed.get_seed(None)[0] == 4242
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is symbolic_build
    model = keras.models.load_model(str(tmp_path / "run" / "model.keras"))
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert model.get_layer("backbone").get_layer("conv1").dtype_policy.name == precision
    probs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert os.path.isfile(tmp_path / "run" / "saved_model" / "saved_model.pb")


JIT_ON_DISK = """
name: jit-on-disk
augment: {flip: none, zoom: 0.1, translate: 0.05}
phases:
  - {name: head, epochs: 1, trainable: none}
data: {cache: disk}
"""


@pytest.mark.slow
def test_jit_compile_and_a_disk_cache_train_on_cpu(tiny_data, backbone_file, tmp_path):
    """One run for two settings: XLA (its augmentation runs in the pipeline) and decoded images cached on disk."""
    import warnings

    recipe = tmp_path / "jit.yaml"
    recipe.write_text(JIT_ON_DISK)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli("fit", tiny_data, "-b", "vgg16", "--weights", backbone_file, "--image-size", 32,
                         "--recipe", recipe, "--no-cache-features", "--jit-compile", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "jit_compile" in str(w.message)]  # Keras did not fall back silently
    assert "end to end" in result.output  # its augmentation ran in the pipeline: the test below
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and history["loss"].notna().all()
    assert f"decoded images cached on disk in {tmp_path / 'run' / 'cache'}" in result.output
    assert not (tmp_path / "run" / "cache").exists()  # removed when the run ends


def test_with_jit_compile_the_augmentation_runs_in_the_pipeline_and_the_model_trained_has_none(tiny_data, backbone_file,
                                                                                               tmp_path):
    from conftest import new_session

    for jit in (True, False):
        session = new_session({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "jit_compile": jit,
                               "augment": {"flip": "horizontal", "zoom": 0.3, "translate": 0.2},
                               "phases": [{"name": "all", "epochs": 1, "trainable": "all"}]},
                              tiny_data, str(tmp_path / f"jit-{jit}"))
        trained = session.model_for(use_cache=False)
        assert session.augment_in_pipeline is jit and (trained is session.clf.inference) is jit
        assert any(layer is session.clf.augmenter for layer in trained.layers) is not jit
        decoded = {np.asarray(image, np.float32).tobytes() for image, _, _ in session.train_images}
        train, _ = session.epoch_data(0, 1, use_cache=False)
        images = next(iter(train))[0].numpy()
        as_decoded = [image.tobytes() in decoded for image in images]
        # With XLA every training image was transformed in the pipeline; without, the model transforms them.
        assert as_decoded == [not jit] * len(images)


def test_a_phase_traces_its_training_step_once(tiny_data, backbone_file, tmp_path):
    """Nothing is left for the first trace of the training step to create (the optimizer's slots, the metrics'
    totals): TensorFlow traces a step that creates variables a second time, which doubled the first epoch."""
    import tensorflow as tf

    from conftest import new_session

    session = new_session({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "batch_size": 8,
                           "phases": [{"name": "top", "epochs": 1, "trainable": {"last_groups": 1}}]},
                          tiny_data, str(tmp_path / "run"))
    model = session.model_for(use_cache=False)
    session.enter_phase(0)
    session.compile_phase(model, 0)
    made = []

    def creator(next_creator, **kwargs):
        if not tf.executing_eagerly():  # inside a trace
            made.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        logs = session.fit_epoch(model, 0, 0, use_cache=False)
    assert made == [] and np.isfinite(logs["loss"]) and "val_accuracy" in logs


def test_caching_augmented_views_never_touches_batchnorm(tiny_data):
    """Views run augmentation in training mode and the backbone in inference
    mode, even while the backbone's layers are still marked trainable."""
    import keras

    from tltool.data.pipeline import labelled_images
    from tltool.models.classifier import build_classifier
    from tltool.models.freeze import batchnorm_layers
    from tltool.models.registry import get_backbone
    from tltool.recipe.schema import Augment, Head
    from tltool.tasks import get_task
    from tltool.training.features import compute_features

    spec = get_backbone("mobilenet")  # BatchNorm throughout, and quicker to build than MobileNetV2
    clf = build_classifier(spec.build(32, "none"), 3, 32, Head(), Augment(flip="horizontal", zoom=0.2))
    assert clf.backbone.model.trainable  # nothing frozen yet: the dangerous case
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(tiny_data) for f in fs)
    images = labelled_images(paths, [0] * len(paths), 32)
    before = [keras.ops.convert_to_numpy(bn.moving_mean).copy() for bn in batchnorm_layers(clf.backbone.model)]
    cache = compute_features(clf.features, clf.augmenter, images, images, len(paths), len(paths), 2, 8,
                             lambda y: get_task().encode(y, 3), None)
    after = [keras.ops.convert_to_numpy(bn.moving_mean) for bn in batchnorm_layers(clf.backbone.model)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert cache.train.shape == (2, len(paths), 1024)
    assert not np.allclose(cache.train[0], cache.train[1], rtol=1e-3, atol=0)  # two different views
    plain = clf.features.predict(np.stack([np.asarray(x, "float32") for x, _, _ in images]), verbose=0)
    np.testing.assert_allclose(cache.val, plain, atol=1e-4)


def test_datasets_larger_than_memory_cache_on_disk(tmp_path, monkeypatch):
    from tltool.data.pipeline import choose_cache, memory_budget
    from tltool.errors import TltoolError

    assert memory_budget() >= 2**28  # a quarter of this machine's RAM
    monkeypatch.setenv("TLTOOL_MEMORY_BUDGET", "1M")
    assert memory_budget() == 2**20
    folder = str(tmp_path / "cache")
    assert choose_cache("auto", 2**20 // (32 * 32 * 3) + 1, 32, folder) == os.path.join(folder, "images")
    assert choose_cache("auto", 10, 32, folder) == ""
    monkeypatch.setenv("TLTOOL_MEMORY_BUDGET", "lots")
    with pytest.raises(TltoolError, match="TLTOOL_MEMORY_BUDGET=lots: give bytes"):
        memory_budget()
    monkeypatch.delenv("TLTOOL_MEMORY_BUDGET")
    assert choose_cache("none", 10, 224, folder) is None
    # A run with `data: {cache: disk}`: test_jit_compile_and_a_disk_cache_train_on_cpu.


def test_feature_stores_too_large_for_memory_go_to_disk_and_fill_in_place(tmp_path, monkeypatch):
    from tltool.training.features import _allocate, _fill

    monkeypatch.setenv("TLTOOL_MEMORY_BUDGET", "64K")
    rows = 64 * 1024 // 16 + 1  # 4 float32 per row: one row over the budget
    store = _allocate((1, rows, 4), str(tmp_path), "train")
    assert isinstance(store, np.memmap) and (tmp_path / "train.npy").is_file()
    batches = [(np.full((2, 8, 8, 3), i, np.uint8), np.array([i, i]), np.array([2 * i, 2 * i + 1])) for i in range(3)]
    labels = _fill(lambda x: np.repeat(np.asarray(x, np.float32)[:, :1, 0, 0], 4, axis=1), batches, store[0])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(store[0, :6, 0], [0, 0, 1, 1, 2, 2])
    assert not isinstance(_allocate((1, 10, 4), str(tmp_path), "small"), np.memmap)  # small: in memory
    del store


def test_a_split_with_no_decodable_image_gives_empty_features_not_a_crash():
    from tltool.training.features import _fill

    labels = _fill(lambda x: x, [], np.zeros((0, 4), np.float32))
    assert labels.shape == (0,)


@pytest.mark.slow
def test_stored_features_are_read_only_while_no_phase_has_trained_the_backbone(tiny_data, backbone_file, tmp_path,
                                                                              monkeypatch):
    from tltool.training import feature_store

    from conftest import new_session

    # A store of its own: the rows planted here would otherwise be read by every later audit of these images.
    monkeypatch.setenv("TLTOOL_CACHE_DIR", str(tmp_path / "cache"))

    def session(name, phases):
        made = new_session({"backbone": "vgg16", "weights": backbone_file, "image_size": 32, "batch_size": 8,
                            "phases": phases}, tiny_data, str(tmp_path / name))
        r = made.recipe
        key = feature_store.store_key(made.clf.spec, r.weights, r.image_size, r.data.aspect, r.head.pooling)
        planted = {info.sha1: np.zeros(512, np.float32) for info in made.dataset.infos.values()}  # as if audited
        feature_store.save(key, planted)
        made.train()
        return made

    head = {"name": "head", "epochs": 1, "trainable": "none"}
    frozen = session("frozen", [head])
    assert not np.any(frozen.features.val)  # untouched backbone: the stored rows are read
    tuned = session("tuned", [{"name": "all", "epochs": 1, "trainable": "all"}, head])
    assert np.abs(tuned.features.val).sum(axis=1).min() > 0  # every row computed by the trained backbone
