"""Decode every candidate file once, in parallel, remembering the answers.

Results are cached per file by (absolute path, size, mtime), so a second scan
of an unchanged folder decodes nothing. The cache lives in
``$TLTOOL_CACHE_DIR`` (default ``~/.cache/tltool``), never in the user's
dataset folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from tltool.data.images import ImageError, ImageInfo, check_image
from tltool.files import write_atomic

_CACHE_VERSION = 2  # 2: the perceptual hash


def cache_dir() -> str:
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tltool")
    return os.environ.get("TLTOOL_CACHE_DIR", default)


def check_files(paths: list[str], cache_key: str, progress: bool = True) -> dict[str, ImageInfo | str]:
    """Check that every file decodes.

    Args:
        paths: absolute file paths.
        cache_key: names the cache file (e.g. the dataset root).
        progress: show a progress bar on a terminal.

    Returns:
        path -> ImageInfo for a usable image, or the reason it is not.
    """
    cache_file = os.path.join(cache_dir(), "checks", hashlib.sha1(cache_key.encode()).hexdigest() + ".json")
    cached = _load_cache(cache_file)
    results: dict[str, ImageInfo | str] = {}
    todo = []
    for path in paths:
        stamp = _stamp(path)
        hit = cached.get(path)
        if hit and hit[0] == stamp:
            results[path] = ImageInfo(**hit[1]) if isinstance(hit[1], dict) else hit[1]
        else:
            todo.append((path, stamp))
    if todo:
        for (path, _), result in zip(todo, _run_parallel([p for p, _ in todo], progress)):
            results[path] = result
        fresh = {p: [_stamp(p), asdict(r) if isinstance(r, ImageInfo) else r] for p, r in results.items()}
        _save_cache(cache_file, fresh)
    return results


def _check_one(path: str) -> ImageInfo | str:
    try:
        return check_image(path)
    except ImageError as e:
        return str(e)


def _run_parallel(paths: list[str], progress: bool) -> list[ImageInfo | str]:
    from tqdm import tqdm

    workers = max(1, min(16, (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(_check_one, paths)
        bar = tqdm(results, total=len(paths), desc="checking images", unit="img",
                   disable=None if progress else True, leave=False)
        return list(bar)


def _stamp(path: str) -> list[int]:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [-1, -1]


def _load_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data["files"] if data.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_cache(path: str, files: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, json.dumps({"version": _CACHE_VERSION, "files": files}))
    except OSError:
        pass  # a read-only cache directory only costs the speed-up
