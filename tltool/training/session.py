"""One training run: the classifier, its data pipelines and the phase loop, epoch by epoch.

Each epoch is one call of Keras' `fit` on a dataset made for that epoch, so
everything random in it (the shuffle order, augmentation, dropout) is drawn
from streams seeded by (recipe seed, phase, epoch) and never from state that
accumulates. After every epoch the training state is checkpointed
(`tltool.training.checkpoint`); a run killed at any moment resumes from its last
completed epoch and continues exactly as it would have.
"""

from __future__ import annotations

import math
import os
import signal
import time
import warnings
import zlib

import numpy as np

from tltool import __version__
from tltool.models.applications import BackboneSpec
from tltool.training.checkpoint import Checkpoints, TrainingState
from tltool.console import say, warn
from tltool.data.dataset import Dataset
from tltool.errors import Interrupted, TltoolError, did_you_mean
from tltool.files import write_csv, write_json
from tltool.recipe import IMBALANCE_THRESHOLD, Recipe
from tltool.recipe.schema import RateRange
from tltool.runs.run import write_recipe


class Session:
    """The model, its data and the phase loop of one run.

    Args:
        recipe: the resolved recipe (backbone and image size filled in).
        spec: the backbone's registry entry.
        dataset: the scanned, split dataset.
        initial_weights: the backbone's starting weights; None takes the
            recipe's (a resumed run starts from its checkpoint instead).
    """

    def __init__(self, recipe: Recipe, spec: BackboneSpec, dataset: Dataset, initial_weights: str | None = None):
        import keras

        from tltool.models.applications import resolve_groups
        from tltool.training.distribute import choose
        from tltool.models.freeze import resolve_plan
        from tltool.models.classifier import build_classifier, build_mixer
        from tltool.models.weights import load_backbone

        self.recipe, self.spec, self.dataset = recipe, spec, dataset
        self.run_dir, self.provenance, self.history = "", {}, []
        keras.utils.set_random_seed(recipe.seed)
        _warn_if_cpu_only(recipe)
        keras.config.set_dtype_policy(recipe.precision)
        self.dist = choose(recipe.strategy, recipe.batch_size)
        if self.dist.name != "default":
            say(self.dist.describe(recipe.batch_size))
        size = recipe.image_size
        with self.dist.scope():  # variables made here are mirrored on every replica
            backbone = load_backbone(spec, size, initial_weights or recipe.weights)
            self.clf = build_classifier(spec, backbone, len(dataset.classes), size, recipe.head, recipe.augment,
                                        recipe.seed)
        self.mixer = build_mixer(recipe.augment, recipe.seed)
        self.plans = [resolve_plan(spec, backbone, p.trainable, p.batchnorm, p.batchnorm_momentum)
                      for p in recipe.phases]
        self.group_ranges = resolve_groups(spec, [layer.name for layer in backbone.layers])
        self.weights = class_weights(recipe, dataset)
        self.features, self._features_version = None, None
        self.state = TrainingState()
        self.exported = self.calibration = None

    # ------------------------------------------------------------ start and resume

    def start(self, run_dir: str, resume: bool = False) -> None:
        """Attach the run directory: checkpoints, class weights file, data pipelines (with their caches)."""
        self.run_dir = run_dir
        self.checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), self.clf)
        write_json(os.path.join(run_dir, "class_weights.json"),
                   {self.dataset.classes[i]: w for i, w in (self.weights or {}).items()})
        self._build_pipelines()
        if resume:
            self._restore()
        else:
            self.state = TrainingState(monitor=self._monitor(), tltool=__version__)
            self.checkpoints.save_start(self.state)

    def _restore(self) -> None:
        import pandas as pd

        state = self.checkpoints.load_state()
        if state is None:
            raise TltoolError(f"{self.run_dir}: no usable checkpoint in checkpoints/; start the run again")
        self.state = state
        self.checkpoints.load_weights(state.files["latest"])
        history = os.path.join(self.run_dir, "history.csv")
        if os.path.isfile(history) and state.epoch:
            rows = pd.read_csv(history).drop(columns=["exported"], errors="ignore")
            self.history = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                            for row in rows[rows["epoch"] <= state.epoch].to_dict("records")]
        if state.phase >= len(self.recipe.phases):
            say(f"resuming after epoch {state.epoch} (training done)")
        else:
            say(f"resuming after epoch {state.epoch} (phase {self.recipe.phases[state.phase].name!r}, "
                f"{state.phase_epochs} of its epochs done)")

    def _build_pipelines(self):
        from tltool.data.pipeline import choose_cache, labelled_images, shuffle_window, to_batches

        r, size = self.recipe, self.recipe.image_size
        index = {c: i for i, c in enumerate(self.dataset.classes)}
        rng = np.random.default_rng(r.seed)
        train = [self.dataset.split("train")[i] for i in rng.permutation(len(self.dataset.split("train")))]
        self.steps_per_epoch = math.ceil(len(train) / r.batch_size)  # the same on every worker
        train = self.dist.shard(train)  # this worker's share, cut before any decoding
        self.batch = self.dist.worker_batch(r.batch_size)
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
        val_cache = None if cache is None else "" if cache == "" else os.path.join(cache_dir, "val", "images")
        self.val_images = labelled_images(
            [s.path for s in val], [index[s.label] for s in val], size, r.data.aspect, val_cache) if val else None
        if val_cache:
            os.makedirs(os.path.dirname(val_cache), exist_ok=True)
        say(_cache_message(cache, len(train) + len(val), size, cache_dir))
        self.val_batches = to_batches(self.val_images, len(index), self.batch) if val else None

    def _train_batches(self, seed: int):
        from tltool.data.pipeline import to_batches

        augmenter = self.clf.augmenter if self.augment_in_pipeline else None
        return to_batches(self.train_images, len(self.dataset.classes), self.batch, seed, self.window,
                          augmenter, self.mixer, repeat=True)

    # ------------------------------------------------------------ phases

    def train(self, phases: int | None = None) -> None:
        """Run the recipe's phases from where the state stands (up to `phases` when given).

        Raises:
            Interrupted: Ctrl-C; the last completed epoch is checkpointed.
        """
        with _interrupts() as interrupted:
            self._interrupted = interrupted
            try:
                for index in range(self.state.phase, len(self.recipe.phases) if phases is None else phases):
                    self._phase(index)
            except (Interrupted, KeyboardInterrupt):
                raise Interrupted(self.run_dir, self.state.epoch) from None

    def _phase(self, index: int) -> None:
        if self.state.phase != index or self.state.phase_epochs == 0:
            self.state.start_phase(index)
        use_cache = self.enter_phase(index)
        if self.recipe.phases[index].optimizer.learning_rate == "auto":
            self._choose_rate(index, use_cache)
        self._run_phase(index, use_cache)
        self.state.phase = index + 1
        self.state.phase_epochs = 0
        self.checkpoints.save_state(self.state)

    def enter_phase(self, index: int) -> bool:
        """Apply phase `index`'s freeze plan and cache features if it trains on them; returns whether it does."""
        from tltool.models.freeze import apply_plan

        use_cache = self._uses_cache(index)
        apply_plan(self.clf.backbone, self.plans[index])
        self._announce(index, use_cache)
        if use_cache and self._features_version != self.state.backbone_version:
            self._reseed(index, "features")
            self.features = self._compute_features()
            self._features_version = self.state.backbone_version
        return use_cache

    def _uses_cache(self, index: int) -> bool:
        """Frozen phases train on cached features, unless the recipe mixes images and labels."""
        r = self.recipe
        return r.cache_features and not self.plans[index].trains_backbone and not r.augment.mixes_labels

    def _model(self, use_cache: bool):
        if use_cache:
            return self.clf.head
        return self.clf.inference if self.augment_in_pipeline else self.clf.model

    def _epoch_data(self, index: int, epoch, use_cache: bool):
        """(training batches, validation batches) for one epoch, shuffled by a seed of (seed, phase, epoch)."""
        seed = _derive(self.recipe.seed, index, epoch, "shuffle")
        if use_cache:
            view = epoch if isinstance(epoch, int) else 0
            return self.features.train_dataset(self.batch, seed, self.window, view), \
                self.features.val_dataset(self.batch)
        return self._train_batches(seed), self.val_batches

    def _rate_factors(self, index: int, model) -> list:
        """(variable, factor) for a phase with discriminative rates: each group's rate / the head's."""
        if not isinstance(self.recipe.phases[index].optimizer.learning_rate, RateRange):
            return []
        rates = self.group_rates(index)
        trainable = {id(v) for v in model.trainable_weights}
        layers = self.clf.backbone.layers
        return [(w, rates[group] / rates["head"])
                for group, start, end in self.group_ranges if group in rates
                for layer in layers[start:end] for w in layer.trainable_weights if id(w) in trainable]

    def group_rates(self, index: int) -> dict[str, float]:
        """Each trainable group's learning rate in phase `index`, the head's under "head"."""
        from tltool.training.optim import group_rates

        training = [name for name, n, _ in self.plans[index].groups if n]
        return group_rates(self.recipe.phases[index].optimizer.learning_rate, training)

    def _compile(self, model, index: int, schedule=None) -> None:
        import keras

        from tltool.training.optim import make_optimizer

        r = self.recipe
        with self.dist.scope():  # the optimizer's and metrics' variables too
            model.compile(
                optimizer=make_optimizer(r.phases[index], self.steps_per_epoch, self._rate_factors(index, model),
                                         schedule),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing),
                metrics=["accuracy"], jit_compile=r.jit_compile,
            )

    def _run_phase(self, index: int, use_cache: bool) -> None:
        """Compile, then train phase `index` epoch by epoch from where the state stands."""
        phase, state = self.recipe.phases[index], self.state
        model = self._model(use_cache)
        self._compile(model, index)
        if state.phase_epochs:  # resumed inside this phase: the optimizer continues too
            self.checkpoints.load_optimizer(model.optimizer, model.trainable_variables, state.files["latest"])
        stopping = self.recipe.early_stopping if self.val_batches is not None else None
        for epoch in range(state.phase_epochs, phase.epochs):
            if stopping and phase.early_stopping and state.stopping["wait"] >= stopping.patience:
                say(f"early stopping: {stopping.monitor} has not improved for {stopping.patience} epochs")
                break
            logs, seconds = self._fit_epoch(model, index, epoch, use_cache)
            self._record(index, epoch, logs, seconds, model.optimizer, stopping)
        best = state.files.get("phase_best")
        if stopping and stopping.restore_best and best and best["epoch"] != state.files["latest"]["epoch"]:
            self.checkpoints.load_weights(best)
            state.files["latest"] = dict(best)  # what the model now holds, should the run be resumed from here
            state.backbone_version = best["backbone_version"]
            say(f"phase {phase.name!r}: restored its best epoch, {best['epoch']} "
                f"({stopping.monitor} {state.stopping['best']:.4f})")

    def _fit_epoch(self, model, index: int, epoch: int, use_cache: bool) -> tuple[dict, float]:
        from tltool.training.callbacks import StopOnInterrupt
        from tltool.console import interactive

        self._reseed(index, epoch)
        train, val = self._epoch_data(index, epoch, use_cache)
        start = time.perf_counter()
        with warnings.catch_warnings(), self.dist.lost_worker():
            # Skipping unreadable files makes the validation set's length
            # unknown, and Keras then warns at the end of its pass; nothing is wrong.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            result = model.fit(train, validation_data=val, epochs=1, steps_per_epoch=self.steps_per_epoch,
                               class_weight=self.weights, shuffle=False, verbose=1 if interactive() else 0,
                               callbacks=[StopOnInterrupt(self._interrupted, self.state.epoch)])
        return {k: float(v[-1]) for k, v in result.history.items()}, time.perf_counter() - start

    def _record(self, index: int, epoch: int, logs: dict, seconds: float, optimizer, stopping) -> None:
        """History row, early-stopping and best-epoch bookkeeping, and the checkpoint of one finished epoch."""
        import pandas as pd

        state, phase = self.state, self.recipe.phases[index]
        if self.plans[index].trains_backbone:
            state.backbone_version = state.epoch + 1
        state.epoch += 1
        state.phase_epochs = epoch + 1
        row = {"phase": phase.name, "epoch": state.epoch,
               **{k: logs[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs},
               "learning_rate": float(np.asarray(optimizer.learning_rate)), "seconds": round(seconds, 3)}
        self.history.append(row)
        value = logs.get(state.monitor)
        improved_phase = _improves(value, state.stopping["best"], state.monitor,
                                   stopping.min_delta if stopping else 0.0)
        if improved_phase:
            state.stopping.update(best=value, best_epoch=state.epoch, wait=0)
        else:
            state.stopping["wait"] += 1
        improved_run = _improves(value, state.best["value"], state.monitor)
        if improved_run:
            state.best = {"value": value, "phase": phase.name, "epoch": state.epoch}
        self.checkpoints.save_epoch(state, optimizer, improved_phase, improved_run)
        write_csv(os.path.join(self.run_dir, "history.csv"), pd.DataFrame(self.history))
        shown = ", ".join(f"{k} {row[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in row)
        say(f"epoch {state.epoch} ({phase.name} {epoch + 1}/{phase.epochs}): {shown} ({seconds:.1f} s)")

    def _reseed(self, index: int, epoch) -> None:
        """Set every random stream of the model and the pipeline from (seed, phase, epoch)."""
        for n, generator in enumerate(_seed_generators([self.clf.model, *getattr(self.mixer, "layers", [])])):
            generator.state.assign(np.array([_derive(self.recipe.seed, index, epoch, n), 0],
                                            dtype=generator.state.dtype))

    def _choose_rate(self, index: int, use_cache: bool):
        """`learning_rate: auto`: sweep from where the phase starts, then train at the suggested rate."""
        from tltool.training.lr_find import write_sweep

        sweep = self.sweep_rates(index, use_cache)
        write_sweep(sweep, self.run_dir, self.recipe.phases[index].name)
        phases = list(self.recipe.phases)
        optimizer = phases[index].optimizer.model_copy(update={"learning_rate": sweep.suggestion})
        phases[index] = phases[index].model_copy(update={"optimizer": optimizer})
        self.recipe = self.recipe.model_copy(update={"phases": phases})
        write_recipe(self.run_dir, self.recipe, self.provenance)  # a resumed run trains at the same rate
        say(f"learning rate for phase {phases[index].name!r}: {sweep.suggestion:.3g} ({sweep.rule}; "
            f"lr_find-{phases[index].name}.png)")

    def sweep_rates(self, index: int, use_cache: bool):
        """The learning-rate range test at the start of phase `index`; the model is left as it was."""
        from tltool.training.lr_find import range_test

        model = self._model(use_cache)
        saved = self.clf.model.get_weights()
        self._reseed(index, "lr-find")
        train, _ = self._epoch_data(index, "lr-find", use_cache)
        try:
            return range_test(lambda schedule: self._compile(model, index, schedule), model, train, self.weights)
        finally:
            self.clf.model.set_weights(saved)

    def _monitor(self) -> str:
        if self.val_batches is None:
            return "loss"
        return self.recipe.early_stopping.monitor if self.recipe.early_stopping else "val_loss"

    def _compute_features(self):
        from tltool.training.features import compute_features

        return compute_features(
            self.clf.features, self.clf.augmenter, self.train_images, self.val_images, self.n_train,
            len(self.dataset.split("val")), self.recipe.augment.cached_views, self.batch,
            len(self.dataset.classes), os.path.join(self.run_dir, "cache", "features"),
        )

    def _announce(self, index: int, use_cache: bool) -> None:
        from tltool.models.freeze import count_params

        phase, plan = self.recipe.phases[index], self.plans[index]
        trainable = count_params(self.clf.inference.trainable_weights)
        frozen = count_params(self.clf.inference.non_trainable_weights)
        how = "on cached features" if use_cache else "end to end"
        say(f"\nphase {index + 1}/{len(self.recipe.phases)} {phase.name!r}: {phase.epochs} epoch(s) {how}; "
            f"backbone training: {describe_groups(plan.groups)}; {trainable:,} trainable / {frozen:,} frozen "
            f"parameters; {phase.optimizer.name} lr {self.describe_rate(index)}, {phase.schedule.name} schedule")

    def describe_rate(self, index: int) -> str:
        """'0.001', 'auto', or '1e-05 (block_1) .. 0.001 (head)' for discriminative rates."""
        rate = self.recipe.phases[index].optimizer.learning_rate
        if not isinstance(rate, RateRange):
            return f"{rate:g}" if rate != "auto" else "auto (learning-rate finder)"
        rates = self.group_rates(index)
        first = next(iter(rates))
        return f"{rates[first]:.3g} ({first}) .. {rates['head']:.3g} (head)" if first != "head" else f"{rates['head']:g}"

    def fingerprint(self) -> str:
        """A short hash of every weight of the classifier."""
        import hashlib

        digest = hashlib.sha1()
        for weight in self.clf.inference.weights:
            digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------ outputs

    def finish(self) -> None:
        from tltool.serving.writers import export_saved_model, model_info, save_keras

        self.exported = self._choose_exported_weights()
        self.calibration = self._calibrate()
        self.model = with_temperature(self.clf.inference, (self.calibration or {}).get("temperature"))
        info = model_info(self.dataset.classes, self.recipe.image_size, self.recipe.data.aspect, self.spec.name)
        save_keras(self.model, os.path.join(self.run_dir, "model.keras"))
        export_saved_model(self.model, os.path.join(self.run_dir, "saved_model"), info)
        say(f"saved model.keras and saved_model/ in {self.run_dir} (weights of {describe_exported(self.exported)})")
        self.evaluate()

    def _choose_exported_weights(self) -> dict:
        """Apply the recipe's `export_weights` rule; mark the chosen epoch in history.csv.

        `best` (the default) takes the best epoch by the monitored metric
        across all phases, so a later phase that ends worse never costs the
        model an earlier phase's better weights; `last` keeps the weights
        the final epoch ended with.
        """
        import pandas as pd

        state = self.state
        files = state.files["best" if self.recipe.export_weights == "best" and state.files.get("best") else "latest"]
        self.checkpoints.load_weights(files)
        row = next(r for r in self.history if r["epoch"] == files["epoch"])
        chosen = {"rule": self.recipe.export_weights, "monitor": state.monitor, "phase": row["phase"],
                  "epoch": row["epoch"], "value": row.get(state.monitor)}
        for row in self.history:
            row["exported"] = row["epoch"] == chosen["epoch"]
        write_csv(os.path.join(self.run_dir, "history.csv"), pd.DataFrame(self.history))
        return chosen

    def _calibrate(self) -> dict | None:
        """`calibrate: true`: fit a temperature on the validation split for the exported weights."""
        import tensorflow as tf

        from tltool.training.calibration import apply_temperature, fit_temperature, negative_log_likelihood

        if not self.recipe.calibrate or self.val_batches is None:
            return None
        forward = tf.function(lambda x: self.clf.inference(x, training=False))
        probs, labels = [], []
        for x, y in self.val_batches:
            probs.append(np.asarray(forward(x)))
            labels.append(np.argmax(np.asarray(y), axis=1))
        probs, labels = np.concatenate(probs), np.concatenate(labels)
        temperature = fit_temperature(probs, labels)
        before = negative_log_likelihood(probs, labels)
        after = negative_log_likelihood(apply_temperature(probs, temperature), labels) if temperature != 1.0 else before
        say(f"calibration: temperature {temperature:.3f} fitted on {len(labels)} validation images "
            f"(validation log loss {before:.4f} -> {after:.4f})")
        return {"temperature": round(temperature, 6), "fitted_on": "val", "images": int(len(labels)),
                "val_log_loss_before": before, "val_log_loss_after": after}

    def evaluate(self) -> None:
        """The report for the test split (or validation), into the run directory."""
        import pandas as pd

        from tltool.workflows.evaluating import print_evaluation
        from tltool.serving.loading import predict_images
        from tltool.evaluation.metrics import evaluate_probs
        from tltool.evaluation.report import ReportContext, write_evaluation

        split = "test" if self.dataset.split("test") else "val"
        samples = self.dataset.split(split)
        if not samples:
            warn("no validation or test images: no per-class report (use --val-split > 0)")
            return
        index = {c: i for i, c in enumerate(self.dataset.classes)}
        probs, kept = predict_images(self.model, [s.path for s in samples], self.recipe.image_size,
                                     self.recipe.data.aspect, self.recipe.batch_size)
        evaluation = evaluate_probs([index[samples[i].label] for i in kept], probs, self.dataset.classes)
        lost = sorted(set(range(len(samples))) - {int(i) for i in kept})
        context = ReportContext(
            title=f"tltool run {os.path.basename(self.run_dir)}", model=os.path.join(self.run_dir, "model.keras"),
            split=split, data_root=self.dataset.root, paths=[samples[i].rel for i in kept],
            recipe=self.recipe.model_dump(mode="json"), history=pd.DataFrame(self.history),
            unreadable=[(samples[i].rel, "could not be decoded") for i in lost], exported=self.exported,
            calibration=self.calibration,
        )
        write_evaluation(self.run_dir, evaluation, context)
        say(f"\n{split} split:")
        print_evaluation(self.run_dir, evaluation)


# ---------------------------------------------------------------- helpers


def class_weights(recipe: Recipe, dataset: Dataset) -> dict[int, float] | None:
    """Inverse-frequency weights (`auto`), an explicit mapping, or None.

    `auto` weights only imbalanced training data (the largest class has at
    least IMBALANCE_THRESHOLD times the images of the smallest): on
    balanced data, weights only add noise to the loss.
    """
    if recipe.class_weight == "none":
        return None
    counts = dataset.counts()["train"]
    if recipe.class_weight == "auto":
        present = [counts[c] for c in dataset.classes if counts[c]]
        if max(present) < IMBALANCE_THRESHOLD * min(present):
            return None
        total, n = sum(counts.values()), len(dataset.classes)
        return {i: total / (n * counts[c]) for i, c in enumerate(dataset.classes) if counts[c]}
    unknown = [name for name in recipe.class_weight if name not in dataset.classes]
    if unknown:
        raise TltoolError(
            f"class_weight: no class {unknown[0]!r} in the dataset{did_you_mean(unknown[0], dataset.classes)}; "
            f"classes: {', '.join(dataset.classes)}"
        )
    return {i: float(recipe.class_weight.get(c, 1.0)) for i, c in enumerate(dataset.classes)}


def with_temperature(model, temperature: float | None):
    """The model whose outputs go through the fitted temperature (the same model when there is none)."""
    if temperature is None:
        return model
    import keras

    from tltool.models.layers import Temperature

    return keras.Model(model.input, Temperature(temperature, name="temperature")(model.output), name=model.name)


def _improves(value, best, monitor: str, min_delta: float = 0.0) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if "loss" in monitor else value > best + min_delta


def _derive(*parts) -> int:
    """A 31-bit seed from (recipe seed, phase, epoch, ...): the same parts always give the same seed."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _seed_generators(layers) -> list:
    """Every keras.random.SeedGenerator held by these layers and the layers inside them, in a fixed order."""
    import keras

    found = []
    for layer in layers:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and all(value is not f for f in found):
                found.append(value)
        found += [g for g in _seed_generators(getattr(layer, "layers", [])) if all(g is not f for f in found)]
    return found


class _interrupts:
    """Within the block, the first Ctrl-C only raises a flag (training stops after the current step);
    a second one interrupts at once, as usual."""

    def __init__(self):
        self.flag, self.previous = False, None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._first)
        return lambda: self.flag

    def _first(self, signum, frame):
        self.flag = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        warn("interrupted: stopping after the current step (press Ctrl-C again to stop at once)")

    def __exit__(self, kind, error, traceback):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


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
