"""Walking a dataset once: which files belong to which class, and which are unusable.

Layouts:

- ``DATA/<class>/...``: class folders; files nested deeper count for the class
  folder they are in.
- ``DATA/train/<class>/...`` with optional ``val/`` (or ``valid/``,
  ``validation/``) and ``test/``: pre-split.
- ``DATA.csv`` with columns ``path,label`` and optionally ``split``; paths are
  relative to the CSV's folder.
- ``DATA.csv`` with several labels per image (multi-label): a ``labels``
  column holding zero or more class names, separated by whitespace, or by
  ``;`` or ``|`` when a cell of the file holds one (tltool writes ``;``:
  `join_labels`); or one-hot columns
  (``path,cat,dog,...`` with 0/1). An empty ``labels`` is a negative image.
  A sample's ``label`` is then the tuple of its class names.

Hidden files and folders (a leading dot, ``__MACOSX``, ``Thumbs.db``,
``desktop.ini``) are ignored and counted. A folder that tltool wrote (a run,
an audit, explanations: it holds a marker file, `tltool.files.MARKERS`) is
never read, nor is a folder that holds only such folders (``runs/``). Files
directly in the root (or in a split folder) are not in any class: they are
skipped and reported.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field

from tltool.data.check import check_files
from tltool.data.images import ImageInfo, sniff
from tltool.errors import DatasetError
from tltool.files import MARKERS, made_by_tltool

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_JUNK = {"__macosx", "thumbs.db", "desktop.ini"}


@dataclass
class Sample:
    path: str  # absolute
    rel: str  # relative to the dataset root, with forward slashes
    label: str | tuple[str, ...]  # a class name; the tuple of its class names when several labels apply
    split: str | None = None  # from the layout or CSV; None until a split assigns one

    @property
    def labels(self) -> tuple[str, ...]:
        """Every class the image holds: one for a single label, zero or more for multi-label data."""
        return self.label if isinstance(self.label, tuple) else (self.label,)

    @property
    def cell(self) -> str:
        """The label as a CSV cell that the scan reads back: the class name, or the labels (`join_labels`)."""
        return join_labels(self.label) if isinstance(self.label, tuple) else self.label


@dataclass
class Skipped:
    rel: str
    reason: str
    label: str | None = None  # the class the file was meant for, when the layout names one


@dataclass
class Scan:
    root: str
    layout: str  # "folders" | "presplit" | "csv"
    samples: list[Sample]
    skipped: list[Skipped]
    infos: dict[str, ImageInfo]
    class_folders: dict[str, list[str]] = field(default_factory=dict)  # split -> class names seen
    hidden: int = 0
    multi_label: bool = False  # a CSV with a labels column or one-hot columns


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK


# tltool's own marker files: skipped like hidden files, but not counted as ignored.
_TLTOOL_FILES = {".tltool-example", *MARKERS}


def _ignored(name: str) -> bool:
    return is_hidden(name) and name not in _TLTOOL_FILES


def scan(path: str, progress: bool = True) -> Scan:
    """Find every candidate file under `path` and check that it decodes.

    Raises:
        DatasetError: the path does not exist, or its layout is ambiguous.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path) and path.lower().endswith(".csv"):
        found = _from_csv(path)
    elif os.path.isdir(path):
        found = _from_folders(path)
    elif os.path.exists(path):
        raise DatasetError(f"{path}: not a folder or a .csv file; give a folder with one sub-folder per class")
    else:
        raise DatasetError(f"{path}: no such folder; give a folder with one sub-folder per class")
    return _checked(found, progress)


def _from_folders(root: str) -> Scan:
    result = Scan(root, "folders", [], [], {})
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    dirs = [e for e in entries if e.is_dir() and not is_hidden(e.name) and not _tltool_folder(e.path)]
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    if not any(d.name.lower() == "train" for d in split_dirs):
        _add_class_folders(result, root, "", None)
        return result
    others = [d.name for d in dirs if d not in split_dirs]
    if others:
        raise DatasetError(
            f"{root} has a train/ folder, so every sub-folder must be a split (train, val, test); "
            f"found {', '.join(others)}: move them into train/ or rename train/"
        )
    result.layout = "presplit"
    result.hidden = sum(1 for e in entries if _ignored(e.name))
    result.skipped += [
        Skipped(e.name, "not in a class folder") for e in entries if not e.is_dir() and not is_hidden(e.name)
    ]
    for d in split_dirs:
        _add_class_folders(result, d.path, f"{d.name}/", SPLIT_FOLDERS[d.name.lower()])
    return result


def _tltool_folder(path: str) -> bool:
    """A folder tltool wrote, or one that holds nothing but such folders (and hidden files)."""
    if made_by_tltool(path):
        return True
    entries = [e for e in os.scandir(path) if not is_hidden(e.name)]
    return bool(entries) and all(e.is_dir() and made_by_tltool(e.path) for e in entries)


def _add_class_folders(result: Scan, folder: str, prefix: str, split: str | None) -> None:
    seen = result.class_folders.setdefault(split or "all", [])
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_hidden(entry.name):
            result.hidden += _ignored(entry.name)
        elif not entry.is_dir():
            result.skipped.append(Skipped(prefix + entry.name, "not in a class folder"))
        elif not made_by_tltool(entry.path):
            pruned = []
            files = list(_walk(entry.path, result, pruned))
            if pruned and not files:  # e.g. runs/, which holds run folders only: not a class
                continue
            label = unicodedata.normalize("NFC", entry.name)
            seen.append(label)
            for file_path in files:
                rel = prefix + os.path.relpath(file_path, folder).replace(os.sep, "/")
                result.samples.append(Sample(file_path, rel, label, split))


def _walk(folder: str, result: Scan, pruned: list):
    """Every candidate file below `folder`, in order; the folders tltool wrote are appended to `pruned`."""
    for dirpath, dirnames, filenames in os.walk(folder):
        result.hidden += sum(1 for d in dirnames if _ignored(d)) + sum(1 for f in filenames if _ignored(f))
        ours = {d for d in dirnames if made_by_tltool(os.path.join(dirpath, d))}
        pruned += sorted(ours)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d) and d not in ours)
        for name in sorted(filenames):
            if not is_hidden(name):
                yield os.path.join(dirpath, name)


def _from_csv(csv_path: str) -> Scan:
    import pandas as pd

    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DatasetError(f"{csv_path}: cannot read as CSV ({e})") from None
    labels = _label_column(csv_path, table)
    base = os.path.dirname(csv_path)
    result = Scan(base, "csv", [], [], {}, multi_label=not isinstance(labels, str))
    names = labels if isinstance(labels, str) else None
    if names:
        _require_labels(csv_path, table[names])
    for i, row in enumerate(table.itertuples(index=False)):
        split = None
        if "split" in table.columns and row.split:
            split = SPLIT_FOLDERS.get(row.split.strip().lower())
            if split is None:
                raise DatasetError(
                    f"{csv_path}: split {row.split!r} for {row.path}; use train, val or test"
                )
        rel = row.path.replace("\\", "/")
        full = rel if os.path.isabs(rel) else os.path.join(base, rel)
        label = unicodedata.normalize("NFC", getattr(row, names)) if names else labels[i]
        result.samples.append(Sample(os.path.normpath(full), rel, label, split))
        if split in (None, "train"):  # the classes, as the file names them, before any file is checked
            result.class_folders.setdefault("all", []).extend((label,) if names else label)
    return result


def _require_labels(csv_path: str, cells) -> None:
    """Every cell of a single-label column names a class (in multi-label data an empty cell is a negative image;
    here it would make a class named "").

    Raises:
        DatasetError: naming the rows, as line numbers of the file.
    """
    empty = [i + 2 for i, cell in enumerate(cells) if not cell.strip()]  # line 1 is the header
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DatasetError(f"{csv_path}: empty label on line(s) {shown}; give each row a class, or use a labels "
                           "column (several labels per image), where an empty cell is an image of no class")


def csv_has_several_labels(path: str) -> bool:
    """Whether `path` is a CSV dataset with several labels per image (a labels column or one-hot columns);
    False for anything else, including a CSV that cannot be read (the scan reports that)."""
    import pandas as pd

    if not (os.path.isfile(path) and path.lower().endswith(".csv")):
        return False
    try:
        return not isinstance(_label_column(path, pd.read_csv(path, dtype=str, keep_default_na=False)), str)
    except (OSError, UnicodeDecodeError, ValueError, DatasetError):
        return False


def split_labels(cells: list[str]) -> list[tuple[str, ...]]:
    """A labels column's cells as sorted tuples of class names: split at whitespace, or at ``;`` or ``|``
    throughout when a cell holds one."""
    cells = [unicodedata.normalize("NFC", cell) for cell in cells]
    separator = next((c for c in (";", "|") if any(c in cell for cell in cells)), None)
    return [tuple(sorted({name.strip() for name in (cell.split(separator) if separator else cell.split())
                          if name.strip()})) for cell in cells]


def join_labels(labels) -> str:
    """One labels cell that `split_labels` reads back, whatever the names: ``; `` between names, and a lone
    name that holds a space ends with ``;`` (so that the file splits at ``;``, not at whitespace)."""
    labels = tuple(labels)
    lone_with_space = len(labels) == 1 and any(c.isspace() for c in labels[0])
    return "; ".join(labels) + (";" if lone_with_space else "")


def _label_column(csv_path: str, table) -> str | list[tuple[str, ...]]:
    """``"label"`` for one label per image; else each row's labels, from a labels column or one-hot columns.

    Raises:
        DatasetError: no label column, or one-hot columns that hold other values than 0 and 1.
    """
    if "path" not in table.columns:
        raise DatasetError(f"{csv_path}: missing column(s) path; a CSV dataset needs the columns path,label (or "
                           "path,labels for several labels per image) and optionally split")
    if "label" in table.columns:
        return "label"
    if "labels" in table.columns:
        return split_labels(list(table["labels"]))
    columns = [c for c in table.columns if c not in ("path", "split")]
    odd = [c for c in columns if not table[c].str.strip().isin(["0", "1"]).all()]
    if not columns or odd:
        where = f" (column {odd[0]!r} holds values other than 0 and 1)" if odd else ""
        raise DatasetError(f"{csv_path}: no label column{where}; a CSV dataset needs path,label, path,labels "
                           "(several per image) or one-hot columns path,<class>,... of 0/1")
    hot = table[columns].apply(lambda col: col.str.strip() == "1")
    names = [unicodedata.normalize("NFC", c) for c in columns]
    return [tuple(n for n, on in zip(names, row) if on) for row in hot.itertuples(index=False)]


def _checked(found: Scan, progress: bool) -> Scan:
    """Keep the samples that decode; move the others to `skipped`."""
    candidates = []
    for sample in found.samples:
        reason = first_bytes_problem(sample.path)
        if reason:
            found.skipped.append(Skipped(sample.rel, reason, sample.label))
        else:
            candidates.append(sample)
    results = check_files([s.path for s in candidates], cache_key=found.root, progress=progress)
    found.samples = []
    for sample in candidates:
        result = results[sample.path]
        if isinstance(result, ImageInfo):
            found.samples.append(sample)
            found.infos[sample.path] = result
        else:
            found.skipped.append(Skipped(sample.rel, result, sample.label))
    found.skipped.sort(key=lambda sk: sk.rel)
    return found


def first_bytes_problem(path: str) -> str | None:
    """Why a file cannot be an image, from its size and first bytes alone (None: it may be one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not head:
        return "empty file"
    fmt = sniff(head)
    if fmt is None:
        return "not an image"
    return None
