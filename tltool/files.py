"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager

# The marker file of each kind of folder tltool writes. A folder that holds one is tltool's: the scanner never
# reads images in it, and only such a folder may be replaced with --overwrite, by the command that wrote it.
RUN_MARKER = ".tltool-run"
AUDIT_MARKER = ".tltool-audit"
EXPLAIN_MARKER = ".tltool-explain"
MARKERS = (RUN_MARKER, AUDIT_MARKER, EXPLAIN_MARKER)


def made_by_tltool(folder: str) -> bool:
    """Whether `folder` is one that tltool wrote (it holds one of `MARKERS`)."""
    return any(os.path.isfile(os.path.join(folder, mark)) for mark in MARKERS)


def write_marker(folder: str, mark: str) -> None:
    """Mark `folder` as written by tltool: `mark` holds the version and the time."""
    import datetime

    from tltool import __version__

    write_json(os.path.join(folder, mark), {"tltool": __version__,
                                            "created": datetime.datetime.now().isoformat(timespec="seconds")})


def containing_folder(path: str, folders) -> str | None:
    """The first of `folders` that `path` is, or lies below, comparing real paths (symlinks resolved)."""
    real = os.path.realpath(path)
    for folder in folders:
        root = os.path.realpath(folder)
        if os.path.commonpath([real, root]) == root:
            return folder
    return None


def file_hash(path: str) -> str:
    """A short SHA-1 of one file's bytes."""
    import hashlib

    digest = hashlib.sha1()
    _digest_file(digest, path)
    return digest.hexdigest()[:16]


def content_hash(paths) -> str:
    """A short SHA-1 of the named files, names and bytes, in order (a missing file counts as empty)."""
    import hashlib

    digest = hashlib.sha1()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        if os.path.isfile(path):
            _digest_file(digest, path)
    return digest.hexdigest()[:16]


def _digest_file(digest, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def safe_name(text: str) -> str:
    """`text` as a file or model name: every character but letters, digits, ``_``, ``.`` and ``-`` as ``_``."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def write_atomic(path: str, content: str | bytes) -> None:
    """Write `content` to `path` through a temporary file and a rename."""
    mode = "wb" if isinstance(content, bytes) else "w"
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(content)


def write_json(path: str, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_csv(path: str, frame) -> None:
    """Write a pandas DataFrame as CSV, atomically."""
    write_atomic(path, frame.to_csv(index=False))


def check_replaceable(folder: str, overwrite: bool, mark: str, kind: str) -> None:
    """An output folder may be written when it is absent or empty, or, with `overwrite`, when it is `kind` (it
    holds `mark`): nothing else a user made is ever replaced.

    Raises:
        TltoolError: naming the folder and what to do.
    """
    from tltool.errors import TltoolError

    if not os.path.exists(folder):
        return
    if not os.path.isdir(folder):
        raise TltoolError(f"--out {folder}: exists and is not a folder; choose another --out")
    if not os.listdir(folder):
        return
    if not overwrite:
        raise TltoolError(f"--out {folder}: exists and is not empty; choose another --out or pass --overwrite")
    if not os.path.isfile(os.path.join(folder, mark)):
        raise TltoolError(f"--out {folder}: not {kind} (no {mark} file); it is never replaced: choose another --out")


@contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; on success move it into place.

    Works for files and for directories (e.g. a SavedModel): an existing
    target is replaced only after the new one is complete.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(path)
    # The temporary name ends like the target, since Keras checks extensions.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{base}", dir=parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
        _sync(tmp)
        if os.path.isdir(path) and not os.path.islink(path):
            # A folder cannot be renamed over another: move the old one aside
            # first, so that one of the two always exists under the name.
            old = tmp + "-old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _sync_folder(parent)  # the rename itself; the parent's other files are not ours to flush
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)


def _sync(path: str) -> None:
    """Flush a file, or a folder with every file and folder below it, to the disk.

    A rename is atomic, but only fsync makes it durable: without it a power
    cut can leave the new name pointing at a file whose data never reached
    the disk.
    """
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name), os.O_RDONLY)
            _sync_folder(root)
    elif os.path.isfile(path):
        _fsync(path, os.O_RDONLY)


def _sync_folder(path: str) -> None:
    """Flush a folder's own entries (names created or renamed in it), not the files below it."""
    _fsync(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
