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


def iterative(samples: list[Sample], val: float, test: float, seed: int) -> list[str]:
    """Give every multi-label sample without a split one, by iterative stratification.

    Sechidis, Tsoumakas and Vlahavas, "On the Stratification of Multi-Label
    Data" (ECML PKDD 2011): the label with the fewest unassigned images goes
    first, and each of its images joins the split that most lacks that label
    (ties: the split that lacks most images, then a seeded draw); a label
    wants its share of each split as a class does in `stratified`, so one with
    two images gives validation one. Rare
    labels are thus spread before common ones use up the splits, where a
    random split often leaves a rare label out of validation. Images without
    a label fill the splits that lack most images.

    Returns:
        warnings naming labels with too few images to reach every split asked for.
    """
    todo = sorted((s for s in samples if s.split is None), key=lambda s: s.rel)
    ratios = {"train": 1.0 - val - test, "val": val, "test": test}
    names = [name for name, r in ratios.items() if r > 0]
    rng = np.random.default_rng(seed)
    wanted = {name: ratios[name] * len(todo) for name in names}
    per_label: dict[str, dict[str, float]] = defaultdict(dict)
    holding: dict[str, list[Sample]] = defaultdict(list)
    for sample in todo:
        for label in sample.labels:
            holding[label].append(sample)
    for label, members in holding.items():  # as a single label's class: 2 images give validation one
        n_val, n_test = _counts(len(members), val, test)
        per_label[label] = {"train": len(members) - n_val - n_test, "val": n_val, "test": n_test}
    left = set(range(len(todo)))
    position = {id(sample): i for i, sample in enumerate(todo)}
    while left:
        counts = {label: sum(1 for m in members if position[id(m)] in left) for label, members in holding.items()}
        counts = {label: n for label, n in counts.items() if n}
        if not counts:
            break
        label = min(sorted(counts), key=counts.get)
        for member in holding[label]:
            if position[id(member)] not in left:
                continue
            chosen = _most_lacking(names, per_label[label], wanted, rng)
            member.split = chosen
            left.discard(position[id(member)])
            wanted[chosen] -= 1
            for other in member.labels:
                per_label[other][chosen] -= 1
    for i in sorted(left):  # images without a label
        chosen = _most_lacking(names, wanted, wanted, rng)
        todo[i].split = chosen
        wanted[chosen] -= 1
    warnings = []
    for label, members in sorted(holding.items()):
        missing = [name for name in names if name != "train" and not any(m.split == name for m in members)]
        if missing:
            warnings.append(f"label {label!r} has {len(members)} image(s), too few to split: none in "
                            f"{' or '.join(missing)}")
    return warnings


def _most_lacking(names: list[str], lacking: dict[str, float], wanted: dict[str, float], rng) -> str:
    best = max(lacking[name] for name in names)
    tied = [name for name in names if lacking[name] == best]
    most = max(wanted[name] for name in tied)
    tied = [name for name in tied if wanted[name] == most]
    return tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]


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
    """data/index.csv's rows: path, label, split; for multi-label data path, labels (as a CSV dataset gives
    them, `scan.join_labels`), split."""
    return [{"path": s.rel, "labels": s.cell, "split": s.split} if isinstance(s.label, tuple)
            else {"path": s.rel, "label": s.label, "split": s.split} for s in samples if s.split]
