"""The run directory as one object: the only code that knows where a run keeps each of its files.

    runs/<name>/
      .tltool-run  recipe.yaml  classes.json  class_weights.json  history.csv  decision.json (multi-label)
      data/index.csv  data/skipped.csv  data/leakage.csv  data/duplicates.csv
      checkpoints/  model.keras  saved_model/
      metrics.json  per_class.csv  confusion_matrix.csv  ...  report.md
      export/  evaluations/  explanations/

`.tltool-run` marks a folder that tltool made. Only such a folder may be
replaced (`--overwrite`), and replacing it deletes only the files and folders
tltool writes there (`OUTPUTS`); anything else a user put in it stays.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil

from tltool.errors import TltoolError
from tltool.files import RUN_MARKER, check_replaceable, write_atomic, write_csv, write_json, write_marker

MARKER = RUN_MARKER
RECIPE = "recipe.yaml"
INDEX = "data/index.csv"
LEAKAGE = "data/leakage.csv"  # held-out images with a copy in an earlier split
DUPLICATES = "data/duplicates.csv"  # every group of exact copies
KEPT_BACKBONE = "backbone"  # a copy of a local keras-hub preset's config files
# Everything `fit` (and later `evaluate`/`export`) writes in a run directory.
OUTPUTS = (
    MARKER, RECIPE, "classes.json", "class_weights.json", "history.csv", INDEX, "data/skipped.csv", LEAKAGE,
    DUPLICATES, "checkpoints", "cache", "model.keras", "saved_model", "export", "lr_find*.csv", "lr_find*.png",
    "metrics.json", "per_class.csv", "confusion_matrix.csv", "predictions.csv", "misclassified.csv",
    "most_confused.csv", "confusion_matrix.png", "curves.png", "per_class_f1.png", "misclassified.png",
    "report.md", "report.html", "evaluations", KEPT_BACKBONE, "decision.json", "pair_errors.csv",
    "precision_recall.png", "most_wrong.png", "explanations",
)


class Run:
    """A run directory written by `fit`: path-like, so it goes wherever a run directory's path does.

    Example:
        >>> run = Run.open("runs/2026-11-24-mobilenetv2")
        >>> run.classes, run.metrics["accuracy"]
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def dir(self) -> str:
        return self.path

    def file(self, name: str) -> str:
        """The path of one of the run's files (a name from OUTPUTS, or below one of its folders)."""
        return os.path.join(self.path, name)

    # ------------------------------------------------------------ opening and creating

    @staticmethod
    def is_run(path) -> bool:
        """A folder tltool made for a run (it holds the marker file)."""
        return os.path.isfile(os.path.join(os.fspath(path), MARKER))

    @classmethod
    def open(cls, path) -> "Run":
        """An existing run directory.

        Raises:
            TltoolError: the folder is not one that tltool made.
        """
        run = cls(path)
        if not cls.is_run(run.path):
            raise TltoolError(f"{run.path}: not a tltool run directory (no {MARKER} file); "
                              "give the folder that `tltool fit` made")
        return run

    @staticmethod
    def check_new(path: str, overwrite: bool) -> None:
        """Refuse a non-empty folder unless --overwrite, and never touch a folder tltool did not make.

        Raises:
            TltoolError: the folder holds something and may not be replaced.
        """
        check_replaceable(os.fspath(path), overwrite, MARKER, "a tltool run directory")

    @classmethod
    def create(cls, path: str, overwrite: bool = False) -> "Run":
        """Make the run folder (after `check_new`); replacing a run deletes only tltool's own outputs."""
        cls.check_new(path, overwrite)
        run = cls(path)
        if os.path.isdir(run.path) and os.listdir(run.path):
            run.remove_outputs()
        os.makedirs(run.file("data"), exist_ok=True)
        os.makedirs(run.checkpoints_dir, exist_ok=True)
        write_marker(run.path, MARKER)
        return run

    def remove_outputs(self) -> None:
        """Delete what tltool wrote in the run folder, and nothing else."""
        for name in OUTPUTS:
            targets = glob.glob(os.path.join(glob.escape(self.path), name)) if "*" in name else [self.file(name)]
            for target in targets:
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.unlink(target)
        data = self.file("data")
        if os.path.isdir(data) and not os.listdir(data):
            os.rmdir(data)

    # ------------------------------------------------------------ folders

    @property
    def checkpoints_dir(self) -> str:
        return self.file("checkpoints")

    @property
    def cache_dir(self) -> str:
        return self.file("cache")

    @property
    def model_file(self) -> str:
        return self.file("model.keras")

    @property
    def saved_model_dir(self) -> str:
        return self.file("saved_model")

    @property
    def export_dir(self) -> str:
        return self.file("export")

    @property
    def explanations_dir(self) -> str:
        """Where `explain` writes by default."""
        return self.file("explanations")

    def new_evaluation_folder(self, name: str) -> str:
        """RUN/evaluations/<date>-<name>, never one that exists."""
        return dated_folder(self.file("evaluations"), name)

    # ------------------------------------------------------------ recipe and provenance

    @property
    def recipe(self) -> dict:
        """The resolved recipe.yaml as plain data ({} without one), provenance included."""
        return read_recipe_file(self.file(RECIPE))

    @property
    def recipe_file(self) -> str:
        return self.file(RECIPE)

    @property
    def provenance(self) -> dict:
        return self.recipe.get("provenance") or {}

    @property
    def dataset(self) -> str | None:
        """The dataset the run trained on, as it recorded it: a folder, or a CSV file."""
        return self.provenance.get("dataset")

    @property
    def dataset_root(self) -> str | None:
        """The folder data/index.csv's paths are relative to (a CSV dataset's folder)."""
        given = self.dataset
        return os.path.dirname(given) if given and given.lower().endswith(".csv") else given

    def keep_backbone_files(self, paths: list[str]) -> None:
        """Copy the files a backbone was built from (a keras-hub preset's config) into backbone/."""
        if paths:
            os.makedirs(self.file(KEPT_BACKBONE), exist_ok=True)
            for path in paths:
                shutil.copy2(path, os.path.join(self.file(KEPT_BACKBONE), os.path.basename(path)))

    def backbone_source(self, name: str) -> str:
        """What to build the run's backbone `name` from: `name`, or the run's copy of its config when `name` is a
        preset folder that is gone (the weights then come from the run's checkpoint or model)."""
        kept = self.file(KEPT_BACKBONE)
        if os.sep in name and not os.path.exists(name) and os.path.isfile(os.path.join(kept, "config.json")):
            return kept
        return name

    def write_recipe(self, recipe, provenance: dict) -> None:
        """The run's resolved recipe.yaml, with where and how the run was made; `--recipe` repeats the run."""
        from tltool.recipe import dump_recipe

        resolved = recipe.model_copy(update={"provenance": provenance})
        header = ("# The resolved recipe of this run. Repeat the run with:\n"
                  f"#   tltool fit {provenance['dataset']} --recipe {self.recipe_file}\n")
        write_atomic(self.recipe_file, header + dump_recipe(resolved))

    # ------------------------------------------------------------ classes, data, history, figures

    @property
    def classes(self) -> list[str]:
        return read_classes(self.file("classes.json"), self.path)

    def write_classes(self, classes: list[str]) -> None:
        write_json(self.file("classes.json"), classes_json(classes))

    def write_class_weights(self, weights: dict[str, float]) -> None:
        write_json(self.file("class_weights.json"), weights)

    @property
    def decision(self) -> dict | None:
        """decision.json: what the task tuned on the validation split (multi-label: a threshold per class)."""
        path = self.file("decision.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def write_decision(self, decision: dict) -> None:
        write_json(self.file("decision.json"), decision)

    def read_index(self):
        """data/index.csv: path (relative to the dataset), label (multi-label: labels), split, sha1."""
        import pandas as pd

        path = self.file(INDEX)
        if not os.path.isfile(path):
            raise TltoolError(f"{self.path}: no {INDEX}; give a run directory made by tltool fit")
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    def write_index(self, rows, skipped) -> None:
        """data/index.csv and data/skipped.csv (DataFrames)."""
        write_csv(self.file(INDEX), rows)
        write_csv(self.file("data/skipped.csv"), skipped)

    @property
    def leakage_file(self) -> str:
        return self.file(LEAKAGE)

    @property
    def duplicates_file(self) -> str:
        return self.file(DUPLICATES)

    def leaked(self, split: str) -> int:
        """How many images of `split` data/leakage.csv lists (0 without the file)."""
        import pandas as pd

        if not os.path.isfile(self.leakage_file):
            return 0
        table = pd.read_csv(self.leakage_file)
        return int(table[table["split_a"] == split]["path_a"].nunique())

    def split_files(self) -> dict:
        """The run's images by split, as (absolute path, label); {} when the dataset or index is gone."""
        root = self.dataset_root
        if not root or not os.path.isfile(self.file(INDEX)):
            return {}
        from tltool.data.scan import split_labels

        index = self.read_index()
        if "labels" in index.columns:  # multi-label: each image's tuple of class names
            index["label"] = split_labels(list(index["labels"]))
        found = {"root": root}
        for split in ("train", "val", "test"):
            rows = index[index["split"] == split]
            found[split] = [(os.path.join(root, p), label) for p, label in zip(rows["path"], rows["label"])]
        return found

    @property
    def history(self):
        """history.csv as a pandas DataFrame (one row per epoch, all phases), or None before the first epoch."""
        import pandas as pd

        path = self.file("history.csv")
        if not os.path.isfile(path) or os.path.getsize(path) <= 1:  # none yet, or none since a lost one
            return None
        return pd.read_csv(path)

    def write_history(self, rows: list[dict]) -> None:
        import pandas as pd

        write_csv(self.file("history.csv"), pd.DataFrame(rows))

    @property
    def metrics(self) -> dict:
        """metrics.json: the report's figures and which weights were exported ({} before there is one)."""
        path = self.file("metrics.json")
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


# ---------------------------------------------------------------- helpers that need no run


def read_recipe_file(path: str | None) -> dict:
    """A recipe.yaml as plain data; {} without one."""
    if not path or not os.path.isfile(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def read_classes(path: str, where: str) -> list[str]:
    """A classes.json, as index order."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TltoolError(f"{where}: no classes.json; give a run directory made by tltool fit") from None
    return [data[str(i)] for i in range(len(data))] if isinstance(data, dict) else list(data)


def classes_json(classes: list[str]) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(classes)}


def dated_folder(base: str, name: str) -> str:
    """base/<date>-<name>, with -2, -3, ... when that exists."""
    stem = os.path.join(base, f"{datetime.date.today().isoformat()}-{name}")
    candidate, n = stem, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def default_run_dir(backbone: str, base: str = "runs") -> str:
    """runs/<date>-<backbone>, with -2, -3, ... when that exists."""
    return dated_folder(base, backbone)
