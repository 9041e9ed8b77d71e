"""A scanned, checked and split dataset: the input of `fit`, `inspect` and `evaluate`."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from tltool.data import split as splitting
from tltool.data.images import ImageInfo
from tltool.data.scan import Sample, Skipped, scan
from tltool.errors import DatasetError


@dataclass
class Dataset:
    root: str
    layout: str
    classes: list[str]
    samples: list[Sample]
    skipped: list[Skipped]
    infos: dict[str, ImageInfo]
    hidden: int = 0
    split_given: bool = False  # the layout (split folders, a CSV's split column) named the splits
    multi_label: bool = False  # several labels per image (a CSV's labels or one-hot columns)
    source: str = ""  # what was given: the folder, or the CSV file (`root` is then its folder)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, Counter]:
        """split -> Counter(label -> number of usable images that hold it)."""
        result = {name: Counter() for name in splitting.SPLITS}
        for s in self.samples:
            if s.split:
                result[s.split].update(s.labels)
        return result

    def images(self) -> dict[str, int]:
        """split -> number of usable images (with several labels per image, not the sum of `counts`)."""
        return {name: sum(1 for s in self.samples if s.split == name) for name in splitting.SPLITS}

    def image_folders(self) -> list[str]:
        """Every folder that holds one of its images, and a folder dataset's root, shortest first: nothing tltool
        writes may go inside them. (A CSV's own folder is not read as data, so a run may sit beside it.)"""
        folders = {os.path.dirname(s.path) for s in self.samples} | ({self.root} if self.layout != "csv" else set())
        return sorted(folders, key=lambda f: (len(f), f))

    def require_usable(self) -> None:
        """Raise DatasetError naming every problem, if there is any."""
        if self.problems:
            raise DatasetError("; ".join(self.problems))


def load_dataset(
    path: str,
    val_split: float = 0.2,
    test_split: float = 0.0,
    seed: int = 1337,
    split_from=None,
    progress: bool = True,
) -> Dataset:
    """Scan, check and split a dataset; problems are collected, not raised.

    Args:
        path: a folder (class folders, or train/val/test folders) or a CSV.
        val_split: fraction of each class for validation when the layout
            does not give a validation split.
        test_split: fraction for test, likewise.
        seed: seed for the split.
        split_from: an earlier run (`tltool.runs.Run`) whose index gives the split.
        progress: show a progress bar while checking files.
    """
    found = scan(path, progress=progress)
    ds = Dataset(found.root, found.layout, [], found.samples, found.skipped, found.infos, found.hidden,
                 multi_label=found.multi_label, source=os.path.abspath(os.path.expanduser(path)))
    ds.classes = _classes(found)
    ds.split_given = any(s.split for s in ds.samples)
    if split_from:
        ds.warnings += splitting.from_index(ds.samples, split_from)
    else:
        has_val, has_test = _has(ds, "val"), _has(ds, "test")
        if not has_val or (not has_test and test_split > 0):  # carve them out of train
            for s in ds.samples:
                if s.split == "train":
                    s.split = None
        split = splitting.iterative if ds.multi_label else splitting.stratified
        ds.warnings += split(ds.samples, 0.0 if has_val else val_split, 0.0 if has_test else test_split, seed)
    ds.problems = _problems(ds, found)
    return ds


def _has(ds: Dataset, split: str) -> bool:
    return any(s.split == split for s in ds.samples)


def _classes(found) -> list[str]:
    if found.layout == "presplit":
        names = found.class_folders.get("train", [])
    else:  # class folders, or the labels a CSV gives its training rows: whether or not their files decode
        names = found.class_folders.get("all", [])
    return sorted(set(names))


def _problems(ds: Dataset, found) -> list[str]:
    problems = []
    known = set(ds.classes)
    strays = sorted({label for s in ds.samples if s.split for label in s.labels if label not in known})
    for label in strays:
        where = sorted({s.split for s in ds.samples if label in s.labels})
        problems.append(
            f"class {label!r} is in {'/'.join(where)} but not in train; add training images for it or remove it"
        )
    train = ds.counts()["train"]
    skipped_by_class = Counter(sk.label or _class_of(sk.rel, found.layout) for sk in ds.skipped)
    for label in ds.classes:
        if train[label] == 0:
            skipped = skipped_by_class.get(label, 0)
            detail = f" ({skipped} skipped, see the skipped files)" if skipped else ""
            fix = "add images or remove its rows from the CSV" if found.layout == "csv" else \
                "add images or remove the folder"
            problems.append(f"class {label!r} has no usable training images{detail}; {fix}")
    usable = [c for c in ds.classes if train[c] > 0]
    if ds.multi_label and not usable:
        problems.append(f"{ds.root}: no training image holds a label; a multi-label CSV needs at least one")
    elif len(usable) < 2 and not ds.multi_label:  # multi-label: one class against its negatives is a task
        problems.append(
            f"{ds.root} has {len(usable)} class(es) with usable images; a classifier needs at least 2 "
            "(one sub-folder of images per class)"
        )
    return problems


def _class_of(rel: str, layout: str) -> str | None:
    parts = rel.split("/")
    if layout == "presplit":
        return parts[1] if len(parts) > 2 else None
    return parts[0] if len(parts) > 1 else None


def describe_skipped(skipped: list[Skipped], limit: int = 5) -> str:
    """One line: how many files were skipped and why, with a few examples."""
    reasons = Counter(sk.reason for sk in skipped)
    summary = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    examples = "; ".join(f"{sk.rel}: {sk.reason}" for sk in skipped[:limit])
    more = f"; ... {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"skipped {len(skipped)} file(s) ({summary}): {examples}{more}"
