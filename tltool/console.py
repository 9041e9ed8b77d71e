"""Messages to the person at the terminal: progress lines on stderr, tables on stdout."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def say(message: str) -> None:
    """A progress or status line, on stderr so stdout stays clean for data."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    """Format rows as aligned text columns; `align` is one 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def interactive() -> bool:
    return sys.stdout.isatty()


def debug() -> bool:
    """TLTOOL_DEBUG=1 (or `tltool --verbose`) shows TensorFlow's own log lines."""
    return os.environ.get("TLTOOL_DEBUG", "") not in ("", "0")


@contextmanager
def native_output_hidden():
    """Hide what TensorFlow's C++ code writes to the process's stdout/stderr inside the block.

    TensorFlow logs several lines at import (oneDNN, CUDA probes, a
    `failed call to cuInit` error on every machine without a GPU) and the
    TFLite converter hundreds more, written below Python and before
    `TF_CPP_MIN_LOG_LEVEL` applies. They carry no information for the
    user; if the block fails they are printed after all, and `debug()`
    turns the hiding off.
    """
    if debug():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))


def load_tensorflow():
    """Import TensorFlow and probe its devices once, without its start-up log lines."""
    # 3 hides the C++ errors too: on CPUs they are notes such as "oneDNN
    # supports DT_UINT8 only on platforms with AVX-512"; real failures still
    # raise Python exceptions with their message.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug() else "3")
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    with native_output_hidden():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf
