"""`audit`: duplicates, leaks across splits, likely label errors and outliers, before they cost accuracy.

The dataset is read and split as `fit` would (the same flags and
defaults); each image is embedded once by the backbone (or a run's
fine-tuned model) through the input contract, and cached
(`tltool.quality.embeddings`); `tltool.quality.findings` says what is
flagged and why. Nothing is written under DATA and no user file is moved,
renamed or deleted: the findings go to their own folder, and
``--write-clean FILE.csv`` writes a new dataset CSV without the flagged files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from tltool.console import say
from tltool.data.dataset import load_dataset
from tltool.errors import TltoolError
from tltool.files import AUDIT_MARKER, atomic_path, check_replaceable, write_csv, write_marker
from tltool.quality.findings import Thresholds
from tltool.runs.run import Run, dated_folder

DUPLICATES = "duplicates.csv"


@dataclass
class Audit:
    """What `audit` found and wrote; `label_issues` is None where they were not looked for (`label_note`)."""

    folder: str
    images: int
    duplicates: pd.DataFrame
    label_issues: pd.DataFrame | None
    outliers: pd.DataFrame
    thresholds: Thresholds
    label_note: str | None = None
    clean: str | None = None


def audit(data: str, *, backbone: str | None = None, weights: str | None = None, image_size: int | None = None,
          seed: int | None = None, val_split: float | None = None, test_split: float | None = None,
          aspect: str | None = None, split_from: str | None = None, model: str | None = None,
          out: str | None = None, overwrite: bool = False, write_clean: str | None = None, relabel: bool = False,
          near_similarity: float = 0.95, near_bits: int = 6, outlier_z: float = 6.0, batch_size: int = 32,
          progress: bool = True) -> Audit:
    """Audit a dataset. Raises TltoolError for a bad flag, an existing output, or an unusable dataset."""
    from tltool.quality import findings
    from tltool.workflows.resolving import default_recipe_for, report_dataset, require_outside, resolve_recipe

    if relabel and not write_clean:
        raise TltoolError("--relabel: it applies the suggested labels in --write-clean's file; give --write-clean")
    if write_clean and os.path.exists(write_clean):
        raise TltoolError(f"--write-clean {write_clean}: exists, and is never overwritten; give a new file name")
    limits = Thresholds(near_similarity, near_bits, max(near_bits, Thresholds.loose_bits), outlier_z)
    recipe = resolve_recipe(default_recipe_for(data), backbone=backbone, weights=weights, image_size=image_size,
                            seed=seed, val_split=val_split, test_split=test_split, aspect=aspect)
    dataset = load_dataset(data, recipe.data.val_split, recipe.data.test_split, recipe.seed,
                           Run(split_from) if split_from else None, progress)
    report_dataset(dataset)
    dataset.require_usable()
    folder = os.path.abspath(out or dated_folder("audits", os.path.basename(os.path.normpath(data))))
    for path, flag in ((folder, "--out"), (write_clean, "--write-clean")):
        if path:
            require_outside(path, dataset, flag)
    check_replaceable(folder, overwrite, AUDIT_MARKER, "a folder that tltool audit wrote")
    samples = [s for s in dataset.samples if s.path in dataset.infos]
    embedder, model_run = _embedder(model, recipe)
    say(f"embedding {len(samples)} images with {embedder.key}")
    vectors = embedder.embed([s.path for s in samples], [dataset.infos[s.path].sha1 for s in samples], batch_size,
                             progress)
    unit = findings.normalised(vectors)
    near = findings.neighbours(unit, findings.K_NEAR)
    duplicates = findings.duplicate_pairs(samples, dataset.infos, unit, near, limits)
    issues, note = None, None
    if dataset.multi_label:
        note = ("not looked for: confident learning here takes one label per image; duplicates and outliers "
                "are checked")
    else:
        issues, note = findings.label_issues(samples, dataset.classes, unit, limits)
        if model:
            issues, note = _held_out_only(issues, note, samples, dataset.infos, model, model_run)
    found = Audit(folder, len(samples), duplicates, issues, findings.outliers(samples, dataset.classes, unit, near,
                                                                              limits), limits, note)
    _write(found, dataset, embedder.key)
    if write_clean:
        found.clean = write_clean_csv(write_clean, dataset, found, relabel)
    return found


def _embedder(model: str | None, recipe):
    from tltool.console import load_tensorflow
    from tltool.models.registry import get_backbone
    from tltool.quality.embeddings import Embedder

    load_tensorflow()
    if model:
        from tltool.serving.loading import load_trained

        trained = load_trained(model)
        if trained.keras_model is None:
            raise TltoolError(f"--model {model}: give a run directory or a .keras file (a {trained.kind} file "
                              "has no pooled features to read)")
        return Embedder.from_model(trained.source, trained.keras_model, trained.image_size, trained.aspect), \
            trained.run
    return Embedder.from_backbone(get_backbone(recipe.backbone), recipe.weights, recipe.image_size,
                                  recipe.data.aspect, recipe.seed), None


def _held_out_only(issues: pd.DataFrame, note: str | None, samples: list, infos: dict, model: str, run):
    """With --model, the label issues among the images that model (of `run`) did not train on: a network
    fine-tuned on a wrong label embeds that image with the wrong class, so among its training images no doubt
    shows."""
    if run is None:
        why = (f"--model {model} names no run, so which images it trained on is unknown and every flag is in-sample; "
               "give its run directory")
        return issues, "; ".join(filter(None, [note, why]))
    index = run.read_index()
    trained = set(index[index["split"] == "train"]["sha1"])
    held = {s.rel for s in samples if infos[s.path].sha1 not in trained}
    why = (f"with --model, only the {len(held)} images {run.path} did not train on are flagged (its embeddings of "
           "its own training images agree with their labels, right or wrong)")
    return issues[issues["path"].isin(held)].reset_index(drop=True), "; ".join(filter(None, [note, why]))


def _write(found: Audit, dataset, key: str) -> None:
    from tltool.quality.page import write_page

    with atomic_path(found.folder) as tmp:
        os.makedirs(tmp)
        write_marker(tmp, AUDIT_MARKER)
        write_csv(os.path.join(tmp, DUPLICATES), found.duplicates)
        if found.label_issues is not None:
            write_csv(os.path.join(tmp, "label_issues.csv"), found.label_issues)
        write_csv(os.path.join(tmp, "outliers.csv"), found.outliers)
        write_page(os.path.join(tmp, "report.html"), f"Audit of {dataset.root}", dataset.root,
                   [(k, v) for k, v in describe(found, key).items()],
                   [("Duplicates (exact and near), by cluster", found.duplicates, ["path_a", "path_b"], "None found."),
                    ("Likely label errors, most doubtful first",
                     found.label_issues if found.label_issues is not None else pd.DataFrame(), ["path"],
                     found.label_note or "None found."),
                    ("Outliers, farthest first", found.outliers, ["path"], "None found.")])


def describe(found: Audit, key: str = "") -> dict[str, str]:
    """The audit's counts and thresholds, as the terminal and the report give them."""
    dup, limits = found.duplicates, found.thresholds
    across = dup[dup["split_a"] != dup["split_b"]] if len(dup) else dup
    facts = {
        "images": f"{found.images}" + (f", embedded by {key}" if key else ""),
        "duplicates": f"{(dup['kind'] == 'exact').sum() if len(dup) else 0} exact and "
                      f"{(dup['kind'] == 'near').sum() if len(dup) else 0} near pairs in "
                      f"{dup['cluster'].nunique() if len(dup) else 0} clusters; {len(across)} across splits (leaks)",
        "label issues": found.label_note if found.label_issues is None else
                        f"{len(found.label_issues)} images" + (f"; {found.label_note}" if found.label_note else ""),
        "outliers": f"{len(found.outliers)} images",
        "thresholds": f"near: perceptual hashes at most {limits.near_bits} of 64 bits apart, or embedding cosine "
                      f"similarity >= {limits.near_similarity} with hashes at most {limits.loose_bits} bits apart; "
                      f"outliers: kNN distance above the median + {limits.outlier_z} robust standard deviations; "
                      f"label issues: confident learning on {limits.folds}-fold probe probabilities",
        "folder": found.folder,
    }
    return facts


def write_clean_csv(path: str, dataset, found: Audit, relabel: bool) -> str:
    """A dataset CSV (absolute path, label or labels, split) without the flagged files: the train copy of a
    pair across splits, the second of a pair within a split, outliers, and images with a doubtful label
    (with `relabel`, those keep their image and take the suggested label)."""
    by_rel = {s.rel: s for s in dataset.samples}
    dropped = set()
    for _, row in found.duplicates.iterrows():
        a, b = row["path_a"], row["path_b"]
        if a in dropped or b in dropped:
            continue
        dropped.add(b if row["split_b"] == "train" or row["split_a"] == row["split_b"] else a)
    dropped |= set(found.outliers["path"])
    relabelled = {}
    if found.label_issues is not None:
        if relabel:
            relabelled = dict(zip(found.label_issues["path"], found.label_issues["suggested"]))
        else:
            dropped |= set(found.label_issues["path"])

    column = "labels" if dataset.multi_label else "label"
    rows = [[s.path, relabelled.get(s.rel, s.cell), s.split]
            for s in dataset.samples if s.rel in by_rel and s.rel not in dropped]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=["path", column, "split"]).to_csv(tmp, index=False)
    say(f"wrote {path}: {len(rows)} images, {len(dropped)} left out"
        + (f", {len(relabelled)} relabelled" if relabelled else ""))
    return path
