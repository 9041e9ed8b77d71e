"""`fit`: from a folder of images to a trained, evaluated, exported classifier.

Order of work, cheapest checks first so that nothing trains until everything
is known to be valid: recipe and overrides -> backbone name and image size ->
weights path -> run directory -> dataset scan and split -> backbone build ->
every phase's freeze plan -> training -> model files -> evaluation.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from tltool import __version__
from tltool.backbones import BackboneSpec, get_backbone
from tltool.console import say, warn
from tltool.data.dataset import Dataset, describe_skipped, load_dataset
from tltool.errors import TltoolError, did_you_mean
from tltool.files import write_atomic, write_csv, write_json
from tltool.recipe import DEFAULT_RECIPE, Recipe, apply_overrides, dump_recipe, load_recipe
from tltool.rundir import check_run_dir, classes_json, create_run_dir, default_run_dir
from tltool.weights import check_image_size, weights_source

DEFAULT_BACKBONE = "efficientnetb0"


def resolve_recipe(recipe: str | Recipe | None = None, **overrides) -> Recipe:
    """Load a recipe (default: fine-tune-top), apply flags, fill in backbone and image size."""
    base = recipe if isinstance(recipe, Recipe) else load_recipe(recipe or DEFAULT_RECIPE)
    resolved = apply_overrides(base, **overrides)
    spec = get_backbone(resolved.backbone or DEFAULT_BACKBONE)
    size = resolved.image_size or spec.default_size
    check_image_size(spec, size)
    return resolved.model_copy(update={"backbone": spec.name, "image_size": size})


def fit(data: str, *, recipe: str | Recipe | None = None, out: str | None = None, overwrite: bool = False,
        split_from: str | None = None, progress: bool = True, **overrides) -> str:
    """Train a classifier on a folder of images and write a run directory.

    Args:
        data: folder with one sub-folder per class (or train/val/test
            folders, or a CSV of path,label).
        recipe: a shipped recipe name, a YAML path or a Recipe; default
            fine-tune-top.
        out: run directory; default runs/<date>-<backbone>.
        overwrite: replace an existing run directory.
        split_from: reuse the train/val/test split of an earlier run.
        progress: progress bars while scanning.
        **overrides: backbone, weights, epochs, batch_size, image_size,
            learning_rate, seed, val_split, test_split, aspect, precision,
            jit_compile, cache_features (see `recipe.apply_overrides`).

    Returns:
        The run directory.

    Raises:
        TltoolError: bad input of any kind, before training starts.
    """
    recipe = resolve_recipe(recipe, **overrides)
    spec = get_backbone(recipe.backbone)
    source = weights_source(recipe.weights)
    if source not in ("imagenet", "none") and not os.path.isfile(source):
        raise TltoolError(f"--weights {recipe.weights}: no such file; give imagenet, none, or a .weights.h5/.h5 file")
    if source == "none" and any(p.trainable == "none" or p.batchnorm == "frozen" for p in recipe.phases):
        warn(f"--weights none with recipe {recipe.name!r}: it freezes layers or BatchNorm statistics of a "
             "random backbone, which learn nothing; --recipe from-scratch trains everything")
    out = out or default_run_dir(spec.name)
    check_run_dir(out, overwrite)
    dataset = load_dataset(data, recipe.data.val_split, recipe.data.test_split, recipe.seed, split_from, progress)
    report_dataset(dataset)
    dataset.require_usable()
    from tltool.console import load_tensorflow

    load_tensorflow()
    import keras

    policy = keras.config.dtype_policy()
    session = None
    try:
        # Everything that can fail on bad input (weights, freeze plans, class
        # weights) happens before the folder exists, so a failed start leaves
        # nothing behind and the same command works once the cause is fixed.
        session = Session(recipe, spec, dataset)
        run_dir = create_run_dir(out, overwrite)
        say(f"run directory: {run_dir}")
        write_dataset_files(run_dir, dataset)
        provenance = _provenance(dataset, source, split_from)
        _write_recipe(run_dir, recipe, provenance)
        session.start(run_dir)
        session.train()
        session.finish()
    finally:
        keras.config.set_dtype_policy(policy)
        if session is not None and session.run_dir:
            shutil.rmtree(os.path.join(session.run_dir, "cache"), ignore_errors=True)  # decoded images, features
    provenance["finished"] = _now()
    _write_recipe(run_dir, recipe, provenance)
    return run_dir


def report_dataset(dataset: Dataset) -> None:
    counts = dataset.counts()
    sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items() if c) or "0"
    say(f"dataset {dataset.root}: {len(dataset.classes)} classes, {sizes} images ({dataset.layout} layout)")
    if dataset.skipped:
        warn(describe_skipped(dataset.skipped))
    if dataset.hidden:
        say(f"ignored {dataset.hidden} hidden file(s) and folder(s)")
    from tltool.data.summary import duplicate_warnings

    for message in dataset.warnings + duplicate_warnings(dataset):
        warn(message)


def write_dataset_files(run_dir: str, dataset: Dataset) -> None:
    import pandas as pd

    from tltool.data.split import index_rows

    write_csv(os.path.join(run_dir, "data", "index.csv"),
              pd.DataFrame(index_rows(dataset.samples), columns=["path", "label", "split"]))
    write_csv(os.path.join(run_dir, "data", "skipped.csv"),
              pd.DataFrame([(s.rel, s.reason) for s in dataset.skipped], columns=["path", "reason"]))
    write_json(os.path.join(run_dir, "classes.json"), classes_json(dataset.classes))


def class_weights(recipe: Recipe, dataset: Dataset) -> dict[int, float] | None:
    """Inverse-frequency weights (`auto`), an explicit mapping, or None."""
    if recipe.class_weight == "none":
        return None
    counts = dataset.counts()["train"]
    if recipe.class_weight == "auto":
        total, n = sum(counts.values()), len(dataset.classes)
        return {i: total / (n * counts[c]) for i, c in enumerate(dataset.classes) if counts[c]}
    unknown = [name for name in recipe.class_weight if name not in dataset.classes]
    if unknown:
        raise TltoolError(
            f"class_weight: no class {unknown[0]!r} in the dataset{did_you_mean(unknown[0], dataset.classes)}; "
            f"classes: {', '.join(dataset.classes)}"
        )
    return {i: float(recipe.class_weight.get(c, 1.0)) for i, c in enumerate(dataset.classes)}


@dataclass
class Session:
    """One training run: the model, its data pipelines and the phase loop."""

    recipe: Recipe
    spec: BackboneSpec
    dataset: Dataset
    run_dir: str = ""
    history: list[dict] = field(default_factory=list)
    state: dict = field(default_factory=dict)

    def __post_init__(self):
        import keras

        from tltool.freeze import resolve_plan
        from tltool.model import build_classifier
        from tltool.weights import load_backbone

        keras.utils.set_random_seed(self.recipe.seed)
        _warn_if_cpu_only(self.recipe)
        keras.config.set_dtype_policy(self.recipe.precision)
        size = self.recipe.image_size
        backbone = load_backbone(self.spec, size, self.recipe.weights)
        self.clf = build_classifier(self.spec, backbone, len(self.dataset.classes), size,
                                    self.recipe.head, self.recipe.augment, self.recipe.seed)
        self.plans = [resolve_plan(self.spec, backbone, p.trainable, p.batchnorm, p.batchnorm_momentum)
                      for p in self.recipe.phases]
        self.weights = class_weights(self.recipe, self.dataset)
        self.features = None

    def start(self, run_dir: str) -> None:
        """Attach the run directory: class weights file and the data pipelines (with their caches)."""
        self.run_dir = run_dir
        write_json(os.path.join(self.run_dir, "class_weights.json"),
                   {self.dataset.classes[i]: w for i, w in (self.weights or {}).items()})
        self._build_pipelines()

    def _build_pipelines(self):
        from tltool.data.pipeline import choose_cache, labelled_images, shuffle_window, to_batches

        r, size = self.recipe, self.recipe.image_size
        index = {c: i for i, c in enumerate(self.dataset.classes)}
        rng = np.random.default_rng(r.seed)
        train = [self.dataset.split("train")[i] for i in rng.permutation(len(self.dataset.split("train")))]
        val = self.dataset.split("val")
        cache_dir = os.path.join(self.run_dir, "cache")
        self.n_train = len(train)
        self.window = shuffle_window(len(train), size)
        cache = choose_cache(r.data.cache, len(train) + len(val), size, os.path.join(cache_dir, "train"))
        self.train_images = labelled_images(
            [s.path for s in train], [index[s.label] for s in train], size, r.data.aspect, cache)
        # XLA cannot compile Keras' random augmentation layers (Keras would
        # silently drop jit_compile), so with --jit-compile they run in the
        # pipeline and the augmentation-free graph trains.
        self.augment_in_pipeline = r.jit_compile and self.clf.augmenter is not None
        self.train_batches = to_batches(self.train_images, len(index), r.batch_size, r.seed, self.window,
                                        self.clf.augmenter if self.augment_in_pipeline else None)
        val_cache = None if cache is None else "" if cache == "" else os.path.join(cache_dir, "val", "images")
        self.val_images = labelled_images(
            [s.path for s in val], [index[s.label] for s in val], size, r.data.aspect, val_cache) if val else None
        if val_cache:
            os.makedirs(os.path.dirname(val_cache), exist_ok=True)
        say(_cache_message(cache, len(train) + len(val), size, cache_dir))
        self.val_batches = to_batches(self.val_images, len(index), r.batch_size) if val else None

    # ------------------------------------------------------------ phases

    def train(self) -> None:
        from tltool.freeze import apply_plan

        epoch = 0
        backbone_changes = 0
        features_at = None
        for number, (phase, plan) in enumerate(zip(self.recipe.phases, self.plans), start=1):
            use_cache = self.recipe.cache_features and not plan.trains_backbone
            apply_plan(self.clf.backbone, plan)
            self._announce(number, phase, plan, use_cache)
            if use_cache and features_at != backbone_changes:
                self.features = self._compute_features()
                features_at = backbone_changes
            epoch += self._run_phase(phase, epoch, use_cache)
            backbone_changes += plan.trains_backbone

    def _run_phase(self, phase, first_epoch: int, use_cache: bool) -> int:
        """Compile and fit one phase (its freeze plan already applied); returns epochs run."""
        import keras

        from tltool.callbacks import Checkpointer, HistoryWriter
        from tltool.console import interactive
        from tltool.optim import make_optimizer

        r = self.recipe
        if use_cache:
            model, train, val = self.clf.head, self.features.train_dataset(r.batch_size, r.seed, self.window), \
                self.features.val_dataset(r.batch_size)
        else:
            model = self.clf.inference if self.augment_in_pipeline else self.clf.model
            train, val = self.train_batches, self.val_batches
        steps = math.ceil(self.n_train / r.batch_size)
        model.compile(
            optimizer=make_optimizer(phase, steps),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing),
            metrics=["accuracy"], jit_compile=r.jit_compile,
        )
        monitor = self._monitor()
        callbacks = [
            HistoryWriter(os.path.join(self.run_dir, "history.csv"), self.history, phase.name),
            Checkpointer(os.path.join(self.run_dir, "checkpoints"), self.clf.inference, monitor, self.state,
                         phase.name),
        ]
        if use_cache:
            callbacks.insert(0, self.features.view_switcher())
        if r.early_stopping and val is not None:
            es = r.early_stopping
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best, mode="min" if "loss" in es.monitor else "max"))
        with warnings.catch_warnings():
            # Skipping unreadable files makes the dataset's length unknown, and
            # Keras then warns at the end of every first pass; nothing is wrong.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            result = model.fit(
                train, validation_data=val, epochs=first_epoch + phase.epochs, initial_epoch=first_epoch,
                class_weight=self.weights, callbacks=callbacks, verbose=1 if interactive() else 2, shuffle=False,
            )
        return len(result.epoch)

    def _monitor(self) -> str:
        if self.val_batches is None:
            return "loss"
        return self.recipe.early_stopping.monitor if self.recipe.early_stopping else "val_loss"

    def _compute_features(self):
        from tltool.features import compute_features

        return compute_features(
            self.clf.features, self.clf.augmenter, self.train_images, self.val_images, self.n_train,
            len(self.dataset.split("val")), self.recipe.augment.cached_views, self.recipe.batch_size,
            len(self.dataset.classes), os.path.join(self.run_dir, "cache", "features"),
        )

    def _announce(self, number: int, phase, plan, use_cache: bool) -> None:
        from tltool.freeze import count_params

        trainable = count_params(self.clf.inference.trainable_weights)
        frozen = count_params(self.clf.inference.non_trainable_weights)
        training = describe_groups(plan.groups)
        how = "on cached features" if use_cache else "end to end"
        say(f"\nphase {number}/{len(self.recipe.phases)} {phase.name!r}: {phase.epochs} epoch(s) {how}; "
            f"backbone training: {training}; {trainable:,} trainable / {frozen:,} frozen parameters; "
            f"{phase.optimizer.name} lr {phase.optimizer.learning_rate:g}, {phase.schedule.name} schedule")

    # ------------------------------------------------------------ outputs

    def finish(self) -> None:
        from tltool.exporting import export_saved_model, model_info, save_keras

        self.exported = self._choose_exported_weights()
        info = model_info(self.dataset.classes, self.recipe.image_size, self.recipe.data.aspect, self.spec.name)
        save_keras(self.clf.inference, os.path.join(self.run_dir, "model.keras"))
        export_saved_model(self.clf.inference, os.path.join(self.run_dir, "saved_model"), info)
        say(f"saved model.keras and saved_model/ in {self.run_dir} (weights of {describe_exported(self.exported)})")
        self.evaluate()

    def _choose_exported_weights(self) -> dict:
        """Apply the recipe's `export_weights` rule; mark the chosen epoch in history.csv.

        `best` (the default) takes the best epoch by the monitored metric
        across all phases, so a later phase that ends worse never costs the
        model an earlier phase's better weights; `last` keeps the weights
        the final epoch ended with.
        """
        best = os.path.join(self.run_dir, "checkpoints", "best.weights.h5")
        last = self.history[-1]
        chosen = {"rule": self.recipe.export_weights, "monitor": self.state.get("monitor"),
                  "phase": last["phase"], "epoch": last["epoch"], "value": last.get(self.state.get("monitor"))}
        if self.recipe.export_weights == "best" and self.state.get("best_epoch") and os.path.isfile(best):
            self.clf.inference.load_weights(best)
            chosen.update(phase=self.state["best_phase"], epoch=self.state["best_epoch"], value=self.state["best"])
        for row in self.history:
            row["exported"] = row["epoch"] == chosen["epoch"]
        import pandas as pd

        write_csv(os.path.join(self.run_dir, "history.csv"), pd.DataFrame(self.history))
        return chosen

    def evaluate(self) -> None:
        """The report for the test split (or validation), into the run directory."""
        import pandas as pd

        from tltool.evaluation import print_evaluation
        from tltool.inference import predict_images
        from tltool.metrics import evaluate_probs
        from tltool.report import ReportContext, write_evaluation

        split = "test" if self.dataset.split("test") else "val"
        samples = self.dataset.split(split)
        if not samples:
            warn("no validation or test images: no per-class report (use --val-split > 0)")
            return
        index = {c: i for i, c in enumerate(self.dataset.classes)}
        probs, kept = predict_images(self.clf.inference, [s.path for s in samples], self.recipe.image_size,
                                     self.recipe.data.aspect, self.recipe.batch_size)
        evaluation = evaluate_probs([index[samples[i].label] for i in kept], probs, self.dataset.classes)
        lost = sorted(set(range(len(samples))) - {int(i) for i in kept})
        context = ReportContext(
            title=f"tltool run {os.path.basename(self.run_dir)}", model=os.path.join(self.run_dir, "model.keras"),
            split=split, data_root=self.dataset.root, paths=[samples[i].rel for i in kept],
            recipe=self.recipe.model_dump(mode="json"), history=pd.DataFrame(self.history),
            unreadable=[(samples[i].rel, "could not be decoded") for i in lost], exported=self.exported,
        )
        write_evaluation(self.run_dir, evaluation, context)
        say(f"\n{split} split:")
        print_evaluation(self.run_dir, evaluation)


def _cache_message(cache: str | None, images: int, size: int, folder: str) -> str:
    megabytes = images * size * size * 3 / 2**20
    if cache is None:
        return "decoded images are not cached (data.cache: none): every epoch decodes them again"
    where = "in memory" if cache == "" else f"on disk in {folder}, removed when the run ends"
    return f"decoded images cached {where} ({megabytes:,.0f} MB for {images} images)"


def _warn_if_cpu_only(recipe: Recipe) -> None:
    """Mixed precision and XLA are for accelerators; on a CPU they cost time."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    if recipe.precision != "float32":
        warn(f"precision {recipe.precision} on a CPU is slower than float32 (benchmarks/speed.py: 0.67x "
             "mixed_bfloat16, 0.21x mixed_float16); it is meant for GPUs")
    if recipe.jit_compile:
        warn("--jit-compile on a CPU is much slower than without (benchmarks/speed.py: 0.06x); it is meant for GPUs")


def describe_exported(exported: dict) -> str:
    """'phase 'head' epoch 4 (best val_loss 0.1234)' for logs and reports."""
    text = f"phase {exported['phase']!r} epoch {exported['epoch']}"
    if exported.get("value") is not None and exported.get("monitor"):
        kind = "best" if exported["rule"] == "best" else "last"
        text += f" ({kind} {exported['monitor']} {exported['value']:.4f})"
    return text


def describe_groups(groups: list[tuple[str, int, int]]) -> str:
    """'none', or the groups that train, e.g. 'stage3, stage4 (12/30 layers)'."""
    parts = [name if n == total else f"{name} ({n}/{total} layers)" for name, n, total in groups if n]
    if not parts:
        return "none"
    if len(parts) == len(groups) and all(n == t for _, n, t in groups):
        return f"all {len(groups)} groups"
    return ", ".join(parts)


def _provenance(dataset: Dataset, weights: str, split_from: str | None) -> dict:
    import keras
    import tensorflow as tf

    return {
        "dataset": dataset.root,
        "split_from": os.path.abspath(split_from) if split_from else None,
        "weights_source": weights,
        "command": " ".join(["tltool", *sys.argv[1:]]) if sys.argv[0].endswith(("tltool", "__main__.py")) else None,
        "started": _now(),
        "versions": {"tltool": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
    }


def _write_recipe(run_dir: str, recipe: Recipe, provenance: dict) -> None:
    resolved = recipe.model_copy(update={"provenance": provenance})
    header = ("# The resolved recipe of this run. Repeat the run with:\n"
              f"#   tltool fit {provenance['dataset']} --recipe {os.path.join(run_dir, 'recipe.yaml')}\n")
    write_atomic(os.path.join(run_dir, "recipe.yaml"), header + dump_recipe(resolved))


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")
