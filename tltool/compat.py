"""Work-arounds for Keras bugs under tf.distribute strategies; each names its upstream issue.

Applied only when a run trains under a strategy (`tltool.training.distribute`), never
otherwise, and each is covered by the distribution tests: delete a patch the
day Keras fixes its bug, and the tests say whether it was the last use.

1. `_maybe_symbolic_build` (keras-team/keras#20585, tensorflow/tensorflow#72388).
   Before training, Keras' TensorFlow trainer pulls a batch from the
   distributed iterator to build the model's metrics symbolically, and
   (a) under MultiWorkerMirroredStrategy fails, reducing that per-replica
   batch across workers ("Attempt to convert a value (PerReplica...)");
   (b) under every strategy consumes the batch: with `steps_per_epoch` the
   iterator is kept, so each `fit` call silently skips its first batch. The
   patch builds from the iterator's element spec instead, reading no data.
2. Scalar logs under MultiWorkerMirroredStrategy (keras-team/keras#20585):
   Keras averages each step's per-replica logs (loss, accuracy) across the
   workers with `strategy.reduce("MEAN", value, axis=0)`, and a scalar has
   no axis 0 ("Invalid reduction dimension 0 for input with 0
   dimensions"); the patch averages scalars with `axis=None`.
"""

from __future__ import annotations

_applied: set[str] = set()


def patch_symbolic_build() -> None:
    """Patch 1: build the model from the iterator's element spec, consuming nothing."""
    if "symbolic_build" in _applied:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def first(spec):
        if isinstance(spec, tf.TensorSpec):
            return spec
        components = getattr(spec, "_component_specs", None) or getattr(spec, "_value_specs", None)
        return components[0] if components else spec

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(first, it.element_spec)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _applied.add("symbolic_build")


def patch_multi_worker() -> None:
    """Patches 1 and 2, for MultiWorkerMirroredStrategy."""
    patch_symbolic_build()
    if "scalar_reduce" in _applied:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    from keras.src import tree

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = strategy.experimental_local_results(value)[0]
            if local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    trainer.reduce_per_replica = reduce_per_replica
    _applied.add("scalar_reduce")
