"""Keras callbacks tltool adds to `fit`."""

from __future__ import annotations

import keras

from tltool.errors import Interrupted
from tltool.hooks import pause_point


class StopOnInterrupt(keras.callbacks.Callback):
    """Ends training after the current step once `interrupted()` is true (the first Ctrl-C).

    Args:
        interrupted: returns whether Ctrl-C was pressed.
        epoch: the run's epochs completed before this one (for `pause_point`).
    """

    def __init__(self, interrupted, epoch: int = 0):
        super().__init__()
        self.interrupted, self.epoch = interrupted, epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted():
            raise Interrupted()
        if batch == 0:
            pause_point("step", self.epoch)

    on_test_batch_end = on_train_batch_end
