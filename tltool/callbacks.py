"""Keras callbacks that keep the run directory up to date while training."""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np

from tltool.files import atomic_path, write_csv, write_json


class HistoryWriter(keras.callbacks.Callback):
    """Appends one row per epoch, across all phases, to ``history.csv``."""

    def __init__(self, path: str, rows: list[dict], phase: str):
        super().__init__()
        self.path, self.rows, self.phase = path, rows, phase
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        import pandas as pd

        logs = dict(logs or {})
        row = {"phase": self.phase, "epoch": len(self.rows) + 1}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                row[key] = float(logs[key])
        row["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        row["seconds"] = round(time.perf_counter() - self._start, 3)
        self.rows.append(row)
        write_csv(self.path, pd.DataFrame(self.rows))


class Checkpointer(keras.callbacks.Callback):
    """Saves the whole classifier's weights: latest every epoch, best when it improves.

    The model being fit may be only the head (cached features); the saved
    weights are always those of `full_model`.
    """

    def __init__(self, folder: str, full_model: keras.Model, monitor: str, state: dict, phase: str):
        super().__init__()
        self.folder, self.full_model, self.monitor, self.state, self.phase = folder, full_model, monitor, state, phase
        self.lower_is_better = "loss" in monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        self._save("latest.weights.h5")
        best = self.state.get("best")
        if value is not None and not math.isnan(value) and (
            best is None or (value < best if self.lower_is_better else value > best)
        ):
            self.state.update(best=float(value), best_phase=self.phase, best_epoch=epoch + 1)
            self._save("best.weights.h5")
        self.state.update(monitor=self.monitor, phase=self.phase, epoch=epoch + 1)
        write_json(os.path.join(self.folder, "state.json"), self.state)

    def _save(self, name: str) -> None:
        with atomic_path(os.path.join(self.folder, name)) as tmp:
            self.full_model.save_weights(tmp)
