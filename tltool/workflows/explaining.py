"""`explain`: where a trained model looks (Grad-CAM), for image files and folders.

Each image goes through the input contract as `predict` sends it; its
heatmap is mapped back onto the image as decoded (`tltool.evaluation.gradcam`)
and written as an overlay, with one row of `explanations.csv` per image and
explained class: the predicted class, the one `--class` names, or for a
multi-label model each class it decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tltool.data.images import ImageError
from tltool.data.inputs import collect_inputs
from tltool.errors import TltoolError, did_you_mean
from tltool.files import EXPLAIN_MARKER, atomic_path, check_replaceable, safe_name, write_csv, write_marker
from tltool.serving.loading import TrainedModel, load_trained
from tltool.tasks import get_task

TABLE = "explanations.csv"


@dataclass
class Explained:
    """What `explain` wrote: the folder, one row per explained (image, class), files skipped with reasons,
    and the images for which a multi-label model decided no class (nothing to explain)."""

    folder: str
    rows: pd.DataFrame
    skipped: list[tuple[str, str]]
    undecided: list[str]


def explain(model: str, inputs: list[str], class_name: str | None = None, out: str | None = None,
            overwrite: bool = False, batch_size: int = 16, progress: bool = True) -> Explained:
    """Grad-CAM of `model` (a run directory, a .keras file, or a SavedModel with a ``gradcam`` signature).

    Raises:
        TltoolError: a model that cannot be explained, an unknown class, a bad input path, an existing
            folder without `overwrite`, or no readable image.
    """
    from tltool.evaluation.gradcam import Refined, explainer_of

    trained = load_trained(model)
    explainer = Refined(explainer_of(trained), trained.image_size)
    task = get_task(trained.task).decided(trained.decision)
    chosen = _class_index(class_name, trained.classes)
    folder = os.path.abspath(out or default_folder(trained))
    check_replaceable(folder, overwrite, EXPLAIN_MARKER, "a folder that tltool explain wrote")
    files, skipped = collect_inputs(inputs)
    names = overlay_names(inputs, files)
    rows, undecided = [], []
    with atomic_path(folder) as tmp, _bar(len(files), progress) as bar:
        os.makedirs(tmp)
        write_marker(tmp, EXPLAIN_MARKER)
        for start in range(0, len(files), batch_size):
            batch = files[start:start + batch_size]
            pixels, kept = _prepare(batch, trained, skipped)
            if kept:
                explained = _explain_batch(explainer, task, pixels, chosen)
                for (i, path), classes in zip(kept, explained):
                    rows += _write(tmp, path, names[start + i], classes, trained, task.several_labels)
                    undecided += [] if classes else [path]
            bar.update(len(batch))
        if not rows and not undecided:
            detail = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
            raise TltoolError(f"no image could be read among the inputs ({len(skipped)} skipped"
                              f"{': ' if detail else ''}{detail})")
        table = pd.DataFrame(rows, columns=["path", "class", "probability", "peak_x", "peak_y", "overlay"])
        write_csv(os.path.join(tmp, TABLE), table)
    return Explained(folder, table, skipped, undecided)


def default_folder(trained: TrainedModel) -> str:
    """RUN/explanations, or explanations/ beside a model file outside a run."""
    if trained.run:
        return trained.run.explanations_dir
    return os.path.join(os.path.dirname(trained.source.rstrip(os.sep)), "explanations")


def overlay_names(inputs: list[str], files: list[str]) -> list[str]:
    """Each file's overlay name: its path below the input folder it came from, ``/`` as ``__``, ending ``.png``
    (a file given itself: its name); a name taken already gets ``_2``, ``_3`` ..."""
    folders = [os.path.abspath(i) for i in inputs if os.path.isdir(i)]
    names, taken = [], set()
    for path in files:
        full = os.path.abspath(path)
        below = next((os.path.relpath(full, f) for f in folders if full.startswith(f.rstrip(os.sep) + os.sep)),
                     os.path.basename(full))
        name = os.path.splitext(below.replace(os.sep, "__"))[0]
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        names.append(unique)
    return names


def _class_index(name: str | None, classes: list[str]) -> int | None:
    if name is None:
        return None
    if name not in classes:
        raise TltoolError(f"--class {name}: the model has no such class{did_you_mean(name, classes)}; "
                          f"classes: {', '.join(classes[:20])}")
    return classes.index(name)


def _prepare(paths: list[str], trained: TrainedModel, skipped: list) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(float32 model inputs, (index in `paths`, path) of each), the undecodable files added to `skipped`."""
    import tensorflow as tf

    from tltool.data.contract import prepare_file

    pixels, kept = [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(prepare_file(path, trained.image_size, trained.aspect))
        except (ImageError, tf.errors.OpError) as e:
            skipped.append((path, str(e).splitlines()[0][:200] or "could not be decoded"))
            continue
        kept.append((i, path))
    return np.asarray(pixels, np.float32), kept


def _explain_batch(explainer, task, pixels: np.ndarray, chosen: int | None) -> list[list[tuple[int, float, np.ndarray]]]:
    """Per image, (class, probability, heatmap) for each class to explain."""
    heatmaps, probs = explainer(pixels, np.full(len(pixels), -1 if chosen is None else chosen, np.int32))
    wanted = [[chosen] for _ in probs] if chosen is not None else task.decided_classes(probs)
    first = np.argmax(probs, axis=1) if chosen is None else np.full(len(probs), chosen)
    more = [(i, c) for i, classes in enumerate(wanted) for c in classes if c != first[i]]
    extra = {}
    if more:
        maps, _ = explainer(pixels[[i for i, _ in more]], np.asarray([c for _, c in more], np.int32))
        extra = {pair: m for pair, m in zip(more, maps)}
    return [[(c, float(probs[i, c]), heatmaps[i] if c == first[i] else extra[(i, c)]) for c in classes]
            for i, classes in enumerate(wanted)]


def _write(folder: str, path: str, name: str, explained: list, trained: TrainedModel, several: bool) -> list[list]:
    """The overlay of each explained class over the image as decoded, and its rows; `several`: the model decides
    several labels per image, so each overlay's name says its class."""
    from tltool.data.images import load_image
    from tltool.evaluation.gradcam import peak, to_image
    from tltool.evaluation.overlays import write_overlay

    image = load_image(path)
    rows = []
    for index, probability, heatmap in explained:
        on_image = to_image(heatmap, image.shape[0], image.shape[1], trained.aspect)
        where = peak(on_image)
        label = trained.classes[index]
        file = f"{name}.png" if len(explained) == 1 and not several else f"{name}__{safe_name(label)}.png"
        write_overlay(os.path.join(folder, file), image, on_image, f"{label} {100 * probability:.1f}%")
        rows.append([path, label, round(probability, 6), *(round(v, 6) for v in where or (np.nan, np.nan)), file])
    return rows


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="explaining", unit="img", disable=None if progress else True, leave=False)
