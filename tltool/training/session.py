"""One training run's phase loop, epoch by epoch.

Each epoch is one call of Keras' `fit` on a dataset made for that epoch, so
everything random in it (the shuffle order, augmentation, dropout) is drawn
from streams seeded by (recipe seed, phase, epoch) and never from state that
accumulates. After every epoch the training state is checkpointed
(`tltool.training.checkpoint`); a run killed at any moment resumes from its
last completed epoch and continues exactly as it would have.

The session trains and checkpoints; choosing the exported weights,
calibration, export and the report are the run's last steps
(`tltool.workflows.finishing`).
"""

from __future__ import annotations

import math
import time
import warnings
from functools import cached_property, partial

import numpy as np

from tltool import __version__
from tltool.console import say
from tltool.errors import Interrupted, TltoolError
from tltool.recipe.schema import RateRange
from tltool.training.checkpoint import Checkpoints, TrainingState
from tltool.training.seeding import derive, interrupts, reseed
from tltool.training.setup import Setup, describe_groups


class Session:
    """The phase loop of one run; every piece of its state is made here.

    Args:
        setup: what it trains (`tltool.training.setup.prepare`).
        run: the run directory (`tltool.runs.Run`): checkpoints, history and
            the recipe are written through it.
        resume: continue from the run's checkpoint instead of starting.
    """

    def __init__(self, setup: Setup, run, resume: bool = False):
        self.recipe, self.dataset, self.task = setup.recipe, setup.dataset, setup.task
        self.dist, self.clf, self.mixer, self.plans = setup.dist, setup.clf, setup.mixer, setup.plans
        self.weights, self.run, self.spec = setup.class_weights, run, setup.clf.spec
        self.history: list[dict] = []
        self.provenance: dict = {}
        self.features, self._features_version = None, None
        self.decoded: int | None = None  # training images that decode, counted before the first epoch
        self.stop_requested = False  # set by the first Ctrl-C: training stops after the current step
        self.checkpoints = Checkpoints(run.checkpoints_dir, self.clf)
        classes = self.dataset.classes
        run.write_class_weights({classes[i]: w for i, w in (self.weights or {}).items()})
        self._build_pipelines()
        if resume:
            self.state = self._restore()
        else:
            self.state = TrainingState(monitor=self._monitor(), tltool=__version__)
            self.checkpoints.save_start(self.state)

    @property
    def run_dir(self) -> str:
        return self.run.path

    def _restore(self) -> TrainingState:
        state = self.checkpoints.load_state()
        if state is None:
            raise TltoolError(f"{self.run_dir}: no usable checkpoint in checkpoints/; start the run again")
        self.checkpoints.load_weights(state.files["latest"])
        history = self.run.history
        if history is None and state.epoch:
            from tltool.console import warn

            warn(f"{self.run.file('history.csv')} is missing: the {state.epoch} epoch(s) before this resume are not "
                 "in the new one (the checkpoint holds what training needs)")
        if history is not None and state.epoch:
            rows = history.drop(columns=["exported"], errors="ignore")
            self.history = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                            for row in rows[rows["epoch"] <= state.epoch].to_dict("records")]
        if state.phase >= len(self.recipe.phases):
            say(f"resuming after epoch {state.epoch} (training done)")
        else:
            say(f"resuming after epoch {state.epoch} (phase {self.recipe.phases[state.phase].name!r}, "
                f"{state.phase_epochs} of its epochs done)")
        return state

    def _build_pipelines(self) -> None:
        import os

        from tltool.data.pipeline import choose_cache, describe_cache, labelled_images, shuffle_window, to_batches

        r, size, task, classes = self.recipe, self.recipe.image_size, self.task, self.dataset.classes
        train = self.dataset.split("train")
        train = [train[i] for i in np.random.default_rng(r.seed).permutation(len(train))]
        self.steps_per_epoch = math.ceil(len(train) / r.batch_size)  # the same on every worker
        train = self.dist.shard(train)  # this worker's share, cut before any decoding
        self.batch = self.dist.worker_batch(r.batch_size)
        val = self.dataset.split("val")
        cache_dir = self.run.cache_dir
        self.n_train, self.n_val, self.samples = len(train), len(val), (train, val)
        self.window = shuffle_window(len(train), size)
        cache = choose_cache(r.data.cache, len(train) + len(val), size, os.path.join(cache_dir, "train"))
        self.train_images = labelled_images([s.path for s in train], task.targets([s.label for s in train], classes),
                                            size, r.data.aspect, cache)
        # XLA cannot compile Keras' random augmentation layers (Keras would
        # silently drop jit_compile), so with --jit-compile they run in the
        # pipeline and the augmentation-free graph trains.
        self.augment_in_pipeline = r.jit_compile and self.clf.augmenter is not None
        val_cache = None if cache is None else "" if cache == "" else os.path.join(cache_dir, "val", "images")
        self.val_images = labelled_images([s.path for s in val], task.targets([s.label for s in val], classes),
                                          size, r.data.aspect, val_cache) if val else None
        if val_cache:
            os.makedirs(os.path.dirname(val_cache), exist_ok=True)
        say(describe_cache(cache, len(train) + len(val), size, cache_dir))
        self.val_batches = to_batches(self.val_images, self._encode, self.batch) if val else None

    @property
    def keras_class_weight(self) -> dict | None:  # none where the task weighs classes in its loss (multi-label)
        return None if self.task.weights_in_loss else self.weights

    def _encode(self, targets):
        return self.task.encode(targets, len(self.dataset.classes))

    def _train_batches(self, seed: int):
        from tltool.data.pipeline import to_batches

        augmenter = self.clf.augmenter if self.augment_in_pipeline else None
        return to_batches(self.train_images, self._encode, self.batch, seed, self.window, augmenter, self.mixer,
                          repeat=True)

    # ------------------------------------------------------------ phases

    def train(self, phases: int | None = None) -> None:
        """Run the recipe's phases from where the state stands (up to `phases` when given).

        Raises:
            Interrupted: Ctrl-C; the last completed epoch is checkpointed.
        """
        with interrupts(self):
            try:
                for index in range(self.state.phase, len(self.recipe.phases) if phases is None else phases):
                    self._phase(index)
            except (Interrupted, KeyboardInterrupt):
                raise Interrupted(self.run_dir, self.state.epoch) from None

    def _phase(self, index: int) -> None:
        if self.state.phase != index or self.state.phase_epochs == 0:
            self.state.start_phase(index)
        use_cache = self.enter_phase(index)
        self._require_decoded()
        if self.recipe.phases[index].optimizer.learning_rate == "auto":
            self._choose_rate(index, use_cache)
        self._run_phase(index, use_cache)
        self.state.phase = index + 1
        self.state.phase_epochs = 0
        self.checkpoints.save_state(self.state)

    def enter_phase(self, index: int, sweep: bool = False) -> bool:
        """Apply phase `index`'s freeze plan and cache features if it trains on them; returns whether it does.

        `sweep`: the phase is entered for the learning-rate range test, not to train its epochs.
        """
        from tltool.models.freeze import apply_plan

        use_cache = self.uses_cache(index)
        apply_plan(self.clf.backbone, self.plans[index])
        self._announce(index, use_cache, sweep)
        if use_cache and self._features_version != self.state.backbone_version:
            reseed(self, index, "features")
            self.features = self._compute_features()
            self._features_version = self.state.backbone_version
        return use_cache

    def _require_decoded(self) -> None:
        """Count the training images that decode, once, and refuse far fewer than the scan found.

        The count is the cached features' (free), or one pass over the images,
        which fills the image cache the first epoch would fill anyway.
        """
        from tltool.data.pipeline import count_images, require_decoded

        if self.decoded is None:
            self.decoded = len(self.features.train_labels) if self.features is not None else \
                count_images(self.train_images)
            require_decoded(self.decoded, self.n_train)

    def uses_cache(self, index: int) -> bool:
        """Frozen phases train on cached features, unless the recipe mixes images and labels."""
        r = self.recipe
        return r.cache_features and not self.plans[index].trains_backbone and not r.augment.mixes_labels

    def model_for(self, use_cache: bool):
        """The Keras model a phase trains: the head on cached features, else the whole classifier."""
        if use_cache:
            return self.clf.head
        return self.clf.inference if self.augment_in_pipeline else self.clf.model

    def epoch_data(self, index: int, epoch, use_cache: bool):
        """(training batches, validation batches) for one epoch, shuffled by a seed of (seed, phase, epoch)."""
        seed = derive(self.recipe.seed, index, epoch, "shuffle")
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
        return [(w, rates[group.name] / rates["head"])
                for group in self.clf.backbone.groups if group.name in rates
                for layer in group.layers for w in layer.trainable_weights if id(w) in trainable]

    def group_rates(self, index: int) -> dict[str, float]:
        """Each trainable group's learning rate in phase `index`, the head's under "head"."""
        from tltool.training.optim import group_rates

        return group_rates(self.recipe.phases[index].optimizer.learning_rate, self.plans[index].training_groups)

    def compile_phase(self, model, index: int, schedule=None) -> None:
        """Compile `model` for phase `index`: its optimizer, rates and schedule, the task's loss and metrics."""
        from tltool.training.optim import make_optimizer

        r = self.recipe
        with self.dist.scope():  # the optimizer's and metrics' variables too
            optimizer = make_optimizer(r.phases[index], self.steps_per_epoch, self._rate_factors(index, model), schedule)
            model.compile(optimizer=optimizer, loss=self.task.loss(r, self.weights), metrics=self.task.metrics(),
                          jit_compile=r.jit_compile)
            # Made now, not inside the first trace of the training step, which TensorFlow would then trace twice.
            model.optimizer.build(model.trainable_variables)

    def _run_phase(self, index: int, use_cache: bool) -> None:
        """Compile, then train phase `index` epoch by epoch from where the state stands."""
        phase, state = self.recipe.phases[index], self.state
        model = self.model_for(use_cache)
        self.compile_phase(model, index)
        if state.phase_epochs:  # resumed inside this phase: the optimizer continues too
            self.checkpoints.load_optimizer(model.optimizer, model.trainable_variables, state.files["latest"])
        stopping = self.recipe.early_stopping if self.val_batches is not None else None
        for epoch in range(state.phase_epochs, phase.epochs):
            if stopping and phase.early_stopping and state.stopping["wait"] >= stopping.patience:
                say(f"early stopping: {stopping.monitor} has not improved for {stopping.patience} epochs")
                break
            started = time.perf_counter()
            logs = self.fit_epoch(model, index, epoch, use_cache)
            self._record(index, epoch, logs, started, model.optimizer, stopping)
        best = state.files.get("phase_best")
        if stopping and stopping.restore_best and best and best["epoch"] != state.files["latest"]["epoch"]:
            self.checkpoints.load_weights(best)
            state.files["latest"] = dict(best)  # what the model now holds, should the run be resumed from here
            state.backbone_version = best["backbone_version"]
            say(f"phase {phase.name!r}: restored its best epoch, {best['epoch']} "
                f"({stopping.monitor} {state.stopping['best']:.4f})")

    def fit_epoch(self, model, index: int, epoch: int, use_cache: bool) -> dict:
        """Train one epoch of phase `index` on `model` (compiled by `compile_phase`); its logs."""
        from tltool.console import interactive
        from tltool.training.callbacks import StopOnInterrupt

        reseed(self, index, epoch)
        train, val = self.epoch_data(index, epoch, use_cache)
        with warnings.catch_warnings(), self.dist.lost_worker():
            # Skipping unreadable files makes the validation set's length
            # unknown, and Keras then warns at the end of its pass; nothing is wrong.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            result = model.fit(train, validation_data=val, epochs=1, steps_per_epoch=self.steps_per_epoch,
                               class_weight=self.keras_class_weight, shuffle=False, verbose=1 if interactive() else 0,
                               callbacks=[StopOnInterrupt(lambda: self.stop_requested, self.state.epoch)])
        return {k: float(v[-1]) for k, v in result.history.items()}

    def _record(self, index: int, epoch: int, logs: dict, started: float, optimizer, stopping) -> None:
        """History row, early-stopping and best-epoch bookkeeping, and the checkpoint of one finished epoch.

        The row's `seconds` is the epoch's whole wall time from `started`, its checkpoint included.
        """
        state, phase = self.state, self.recipe.phases[index]
        if self.plans[index].trains_backbone:
            state.backbone_version = state.epoch + 1
        state.epoch += 1
        state.phase_epochs = epoch + 1
        shown = [k for k in ("loss", *self.metric_names) if k in logs]
        row = {"phase": phase.name, "epoch": state.epoch, **{k: logs[k] for k in shown},
               "learning_rate": float(np.asarray(optimizer.learning_rate))}
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
        seconds = time.perf_counter() - started
        row["seconds"] = round(seconds, 3)
        self.run.write_history(self.history)
        figures = ", ".join(f"{k} {row[k]:.4f}" for k in shown)
        say(f"epoch {state.epoch} ({phase.name} {epoch + 1}/{phase.epochs}): {figures} ({seconds:.1f} s)")

    @cached_property  # the task makes new metric objects, and their variables, on each call
    def metric_names(self) -> list[str]:
        """The training and validation figures an epoch records, beside the loss."""
        names = [m.name for m in self.task.metrics()]
        return [*names, "val_loss", *(f"val_{n}" for n in names)]

    def _choose_rate(self, index: int, use_cache: bool):
        """`learning_rate: auto`: sweep from where the phase starts, then train at the suggested rate."""
        from tltool.training.lr_find import write_sweep

        sweep = self.sweep_rates(index, use_cache)
        write_sweep(sweep, self.run_dir, self.recipe.phases[index].name)
        phases = list(self.recipe.phases)
        optimizer = phases[index].optimizer.model_copy(update={"learning_rate": sweep.suggestion})
        phases[index] = phases[index].model_copy(update={"optimizer": optimizer})
        self.recipe = self.recipe.model_copy(update={"phases": phases})
        self.run.write_recipe(self.recipe, self.provenance)  # a resumed run trains at the same rate
        say(f"learning rate for phase {phases[index].name!r}: {sweep.suggestion:.3g} ({sweep.rule}; "
            f"lr_find-{phases[index].name}.png)")

    def sweep_rates(self, index: int, use_cache: bool):
        """The learning-rate range test at the start of phase `index`; the model is left as it was."""
        from tltool.training.lr_find import range_test

        model = self.model_for(use_cache)
        saved = self.clf.model.get_weights()
        reseed(self, index, "lr-find")
        train, _ = self.epoch_data(index, "lr-find", use_cache)
        try:
            return range_test(partial(self.compile_phase, model, index), model, train, self.keras_class_weight)
        finally:
            self.clf.model.set_weights(saved)

    def _monitor(self) -> str:
        if self.val_batches is None:
            return "loss"
        return self.recipe.early_stopping.monitor if self.recipe.early_stopping else "val_loss"

    def _compute_features(self):
        from tltool.training.features import compute_features, stored_features

        return compute_features(
            self.clf.features, self.clf.augmenter, self.train_images, self.val_images, self.n_train, self.n_val,
            self.recipe.augment.cached_views, self.batch, self._encode, self.run.file("cache/features"),
            stored_features(self.recipe, self.clf, *self.samples, self.dataset.infos, self.state.backbone_version))

    def _announce(self, index: int, use_cache: bool, sweep: bool = False) -> None:
        from tltool.models.freeze import count_params
        from tltool.training.lr_find import STEPS

        phase, plan = self.recipe.phases[index], self.plans[index]
        trainable = count_params(self.clf.inference.trainable_weights)
        frozen = count_params(self.clf.inference.non_trainable_weights)
        how = "on cached features" if use_cache else "end to end"
        work = f"a learning-rate sweep of up to {STEPS} steps" if sweep else f"{phase.epochs} epoch(s)"
        say(f"\nphase {index + 1}/{len(self.recipe.phases)} {phase.name!r}: {work} {how}; "
            f"backbone training: {describe_groups(plan.groups)}; {trainable:,} trainable / {frozen:,} frozen "
            f"parameters; {phase.optimizer.name} lr {self.describe_rate(index)}, {phase.schedule.name} schedule")

    def describe_rate(self, index: int) -> str:
        """'0.001', 'auto', or '1e-05 (block_1) .. 0.001 (head)' for discriminative rates."""
        from tltool.training.optim import describe_rates

        return describe_rates(self.recipe.phases[index].optimizer.learning_rate, self.plans[index].training_groups)

    def validation_outputs(self, model) -> tuple[np.ndarray, np.ndarray] | None:
        """(probabilities, targets) of `model` on the validation split, in pipeline order; None without one."""
        import tensorflow as tf

        from tltool.models.classifier import forward_function

        if self.val_images is None:
            return None
        forward, probs, targets = forward_function(model, self.recipe.image_size), [], []
        for images, target, _ in self.val_images.batch(self.batch):
            probs.append(np.asarray(forward(tf.cast(images, tf.float32))))
            targets.append(np.asarray(target))
        return np.concatenate(probs), np.concatenate(targets)

    def fingerprint(self) -> str:
        """A short hash of every weight of the classifier."""
        import hashlib

        digest = hashlib.sha1()
        for weight in self.clf.inference.weights:
            digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
        return digest.hexdigest()[:16]


def _improves(value, best, monitor: str, min_delta: float = 0.0) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if "loss" in monitor else value > best + min_delta
