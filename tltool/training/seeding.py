"""Random streams drawn from (seed, phase, epoch), and the Ctrl-C that stops after the current step."""

from __future__ import annotations

import signal
import threading
import zlib

import numpy as np

from tltool.console import warn


def derive(*parts) -> int:
    """A 31-bit seed from (recipe seed, phase, epoch, ...): the same parts always give the same seed."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def reseed(session, index: int, epoch) -> None:
    """Set every random stream of the session's model and mixer from (seed, phase, epoch)."""
    from tltool.compat import seed_generators

    layers = [session.clf.model, *getattr(session.mixer, "layers", [])]
    for n, generator in enumerate(seed_generators(layers)):
        generator.state.assign(np.array([derive(session.recipe.seed, index, epoch, n), 0],
                                        dtype=generator.state.dtype))


class interrupts:
    """Within the block, the first Ctrl-C only sets `session.stop_requested` (training stops after the
    current step); a second one interrupts at once, as usual."""

    def __init__(self, session):
        self.session, self.previous = session, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._first)
        return self

    def _first(self, signum, frame):
        self.session.stop_requested = True
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        warn("interrupted: stopping after the current step (press Ctrl-C again to stop at once)")

    def __exit__(self, kind, error, traceback):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
