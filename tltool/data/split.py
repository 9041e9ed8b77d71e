"""Assigning samples to train / val / test: stratified and seeded, or reused."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tltool.data.scan import Sample

SPLITS = ("train", "val", "test")


def stratified(samples: list[Sample], val: float, test: float, seed: int) -> list[str]:
    """Give every sample without a split one, class by class.

    Each class is shuffled with `seed` and cut by the ratios; a class with at
    least two images always gets one validation image when `val` > 0, and keeps
    at least one training image.

    Returns:
        warnings naming the classes too small to split as asked.
    """
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.split is None:
            by_class[s.label].append(s)
    rng = np.random.default_rng(seed)
    warnings = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: s.rel)
        n_val, n_test = _counts(len(members), val, test)
        if (val > 0 and n_val == 0) or (test > 0 and n_test == 0):
            warnings.append(
                f"class {label!r} has {len(members)} image(s), too few to split: "
                f"{n_val} for validation, {n_test} for test, the rest for training"
            )
        order = rng.permutation(len(members))
        for rank, i in enumerate(order):
            members[i].split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return warnings


def _counts(n: int, val: float, test: float) -> tuple[int, int]:
    n_val, n_test = round(n * val), round(n * test)
    if val > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n - n_val - n_test < 1 and (n_val or n_test):
        if n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def from_index(samples: list[Sample], run) -> list[str]:
    """Take each sample's split from an earlier run's index (`run.read_index()`, a `tltool.runs.Run`).

    Samples the index does not name are dropped (set to split ``None``), so two
    runs compare on identical data.

    Returns:
        warnings about files that differ from the earlier run.

    Raises:
        TltoolError: the run has no index.
    """
    index = run.read_index()
    wanted = dict(zip(index["path"], index["split"]))
    present = set()
    for s in samples:
        s.split = wanted.get(s.rel)
        present.add(s.rel)
    warnings = []
    extra = sum(1 for s in samples if s.split is None)
    gone = len(set(wanted) - present)
    if extra:
        warnings.append(f"{extra} file(s) are not in the split of {run} and are left out")
    if gone:
        warnings.append(f"{gone} file(s) of the split of {run} are missing or unusable now")
    return warnings


def index_rows(samples: list[Sample]) -> list[dict]:
    return [{"path": s.rel, "label": s.label, "split": s.split} for s in samples if s.split]
