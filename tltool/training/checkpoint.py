"""A run's training state on disk: what `fit` saves after every epoch and what `fit --resume` restores.

    checkpoints/
      state.json              the commit point: phase, epoch, early stopping, best epochs, file names
      state.prev.json         the state before it, the fallback when a file of the latest is torn
      b<V>.backbone.weights.h5  backbone weights, version V (a new version only when the backbone trained)
      e<N>.head.weights.h5    the head's weights after epoch N
      e<N>.optimizer.npz      the optimizer's state after epoch N (moments, step count)

Files are written once under a new name (temporary file, fsync, rename) and
never changed; `state.json` is replaced last, so a kill at any instant leaves
the previous complete checkpoint or the new one. The latest, the best epoch
of the run and the best epoch of the current phase are three references to
such files, so a new best costs nothing, and while a phase leaves the
backbone alone an epoch writes only the head and its optimizer (kilobytes).
Files no state refers to are deleted.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np

from tltool.console import warn
from tltool.errors import UnavailableError
from tltool.files import atomic_path, write_json
from tltool.hooks import pause_point

FORMAT = 1
STATE, PREVIOUS = "state.json", "state.prev.json"


@dataclass
class TrainingState:
    """Where training stands; everything else (the random streams, the schedule) follows from it.

    Attributes:
        phase: index of the phase in progress, or of the next one to start.
        phase_epochs: epochs of that phase completed.
        epoch: epochs completed across all phases.
        backbone_version: bumped by every epoch of a phase that trains the backbone.
        stopping: early stopping in the current phase: best value, its epoch, epochs without improvement.
        best: the best epoch of the run by the monitor: value, phase, epoch.
        files: "latest", "best" and "phase_best": the backbone, head and optimizer files of those epochs.
        finished: the phases completed, by index.
    """

    monitor: str = "val_loss"
    phase: int = 0
    phase_epochs: int = 0
    epoch: int = 0
    backbone_version: int = 0
    stopping: dict = field(default_factory=lambda: {"best": None, "best_epoch": None, "wait": 0})
    best: dict = field(default_factory=lambda: {"value": None, "phase": None, "epoch": None})
    files: dict = field(default_factory=dict)
    format: int = FORMAT
    tltool: str = ""

    def start_phase(self, index: int) -> None:
        self.phase, self.phase_epochs = index, 0
        self.stopping = {"best": None, "best_epoch": None, "wait": 0}
        self.files.pop("phase_best", None)


class Checkpoints:
    """Saving and loading the training state of one run directory."""

    def __init__(self, folder: str, clf):
        self.folder, self.clf = folder, clf
        os.makedirs(folder, exist_ok=True)

    # ------------------------------------------------------------ saving

    def save_backbone(self, state: TrainingState) -> str:
        """The backbone as it is now, as version `state.backbone_version` (written once per version)."""
        name = f"b{state.backbone_version}.backbone.weights.h5"
        if not os.path.exists(os.path.join(self.folder, name)):
            network = self.clf.backbone.model
            self._write(name, network.save_weights, self._weights_bytes(network))
        return name

    def save_start(self, state: TrainingState) -> None:
        """Before the first epoch: the starting backbone, so that a resume never needs the original weights."""
        state.files["latest"] = {"backbone": self.save_backbone(state), "backbone_version": state.backbone_version,
                                 "head": None, "optimizer": None, "phase": 0, "epoch": 0}
        self.save_state(state)

    def save_epoch(self, state: TrainingState, optimizer, improved_phase: bool, improved_run: bool) -> None:
        """After an epoch: the head, the optimizer and (if it trained) the backbone; then the state."""
        backbone = self.save_backbone(state)
        head = f"e{state.epoch}.head.weights.h5"
        self._write(head, self.clf.head.save_weights, self._weights_bytes(self.clf.head), state.epoch)
        store: dict = {}
        optimizer.save_own_variables(store)
        arrays = {str(k): np.asarray(v) for k, v in store.items()}
        opt = f"e{state.epoch}.optimizer.npz"
        self._write(opt, lambda path: _save_npz(path, arrays), sum(a.nbytes for a in arrays.values()))
        latest = {"backbone": backbone, "backbone_version": state.backbone_version,
                  "head": head, "optimizer": opt, "phase": state.phase, "epoch": state.epoch}
        state.files["latest"] = latest
        if improved_phase:
            state.files["phase_best"] = dict(latest)
        if improved_run:
            state.files["best"] = dict(latest)
        self.save_state(state)

    def save_state(self, state: TrainingState) -> None:
        """Replace state.json; the one before becomes state.prev.json when it names other files.

        So state.prev.json always points at an earlier epoch's files, the
        fallback should one of the latest turn out torn.
        """
        path = os.path.join(self.folder, STATE)
        current = _read(path)
        if current and current.get("files", {}).get("latest") != state.files.get("latest"):
            os.replace(path, os.path.join(self.folder, PREVIOUS))
        try:
            write_json(path, asdict(state))
        except OSError as e:
            self._storage_error(e, 4096)
        self._prune()

    def _write(self, name: str, save, size: int, epoch: int = 0) -> None:
        try:
            with atomic_path(os.path.join(self.folder, name)) as tmp:
                save(tmp)
                pause_point("checkpoint", epoch)
        except OSError as e:
            self._storage_error(e, size)

    def _storage_error(self, error: OSError, size: int):
        free = shutil.disk_usage(self.folder).free
        reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0][:160]
        if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, None):
            raise error
        raise UnavailableError(
            f"cannot write a checkpoint in {self.folder}: {reason} (it needs about {size / 2**20:,.1f} MB, "
            f"{free / 2**20:,.0f} MB free); the last good checkpoint is intact: free some space, then "
            f"resume with: tltool fit --resume {os.path.dirname(self.folder)}"
        ) from None

    def _prune(self) -> None:
        keep = {STATE, PREVIOUS}
        for name in (STATE, PREVIOUS):
            recorded = _read(os.path.join(self.folder, name))
            for files in (recorded or {}).get("files", {}).values():
                keep.update(v for k, v in files.items() if k in ("backbone", "head", "optimizer") and v)
        for name in os.listdir(self.folder):  # and what a killed write left (one writer: none is in flight)
            path = os.path.join(self.folder, name)
            if name not in keep:
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)

    @staticmethod
    def _weights_bytes(model) -> int:
        return sum(int(np.prod(w.shape)) * 4 for w in model.weights)

    # ------------------------------------------------------------ loading

    def load_state(self) -> TrainingState | None:
        """The latest state whose files are all there, falling back to the previous one with a warning."""
        for name in (STATE, PREVIOUS):
            recorded = _read(os.path.join(self.folder, name))
            if recorded is None:
                if name == STATE and os.path.exists(os.path.join(self.folder, name)):
                    warn(f"{os.path.join(self.folder, name)} is damaged; using the checkpoint before it")
                continue
            missing = [f for files in recorded.get("files", {}).values() for k, f in files.items()
                       if k in ("backbone", "head", "optimizer") and f
                       and not _loadable(os.path.join(self.folder, f))]
            if missing:
                warn(f"checkpoint file(s) {', '.join(sorted(set(missing)))} in {self.folder} are missing or torn; "
                     "using the checkpoint before it")
                continue
            return TrainingState(**{k: v for k, v in recorded.items() if k in TrainingState.__dataclass_fields__})
        return None

    def load_weights(self, files: dict) -> None:
        """Put a checkpoint's backbone and head weights into the classifier."""
        self.clf.backbone.model.load_weights(os.path.join(self.folder, files["backbone"]))
        if files.get("head"):
            self.clf.head.load_weights(os.path.join(self.folder, files["head"]))

    def load_optimizer(self, optimizer, variables, files: dict) -> None:
        with np.load(os.path.join(self.folder, files["optimizer"])) as data:
            store = {k: data[k] for k in data.files}
        optimizer.build(variables)
        optimizer.load_own_variables(store)


def _save_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _loadable(path: str) -> bool:
    """The file is there and complete (HDF5 opens, npz lists its arrays)."""
    if not os.path.isfile(path):
        return False
    try:
        if path.endswith(".npz"):
            with np.load(path) as data:
                for key in data.files:
                    data[key]
        else:
            import h5py

            with h5py.File(path, "r") as f:
                f.visit(lambda name: None)
        return True
    except Exception:  # any failure to read it back means torn or foreign; the caller falls back
        return False
