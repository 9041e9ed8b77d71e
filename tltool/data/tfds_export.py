"""`tltool datasets export`: well-known datasets from tensorflow-datasets as folders.

Any tensorflow-datasets dataset with (image, label) supervised keys works,
e.g. tf_flowers, oxford_iiit_pet, stanford_dogs, beans, food101. Its splits
become ``train/``, ``val/`` and ``test/`` folders (a dataset with only a train
split is written as plain class folders, for `fit` to split), one sub-folder
per class.

Downloading needs the network. On a machine without it we fail at once, not
after tensorflow-datasets' minutes of retries: a dataset already prepared in
``--data-dir`` (for instance copied from a machine with internet) is exported
without any download.
"""

from __future__ import annotations

import os

from tltool.data.scan import SPLIT_FOLDERS
from tltool.errors import TltoolError, UnavailableError, did_you_mean

EXAMPLES = ("tf_flowers", "oxford_iiit_pet", "stanford_dogs", "beans", "food101", "caltech101")
_PROBE_URL = "https://storage.googleapis.com"


def export_dataset(name: str, dest: str, data_dir: str | None = None, limit: int | None = None,
                   progress: bool = True) -> dict[str, int]:
    """Download (if needed) and write a tensorflow-datasets dataset as folders.

    Returns:
        split folder -> images written.

    Raises:
        TltoolError: unknown dataset, not an image classification dataset,
            or `dest` not empty.
        UnavailableError: the download is impossible from here.
    """
    import tensorflow_datasets as tfds

    if os.path.isdir(dest) and os.listdir(dest):
        raise TltoolError(f"{dest}: exists and is not empty; choose an empty or new folder")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise TltoolError(
            f"tensorflow-datasets has no dataset {name!r}{did_you_mean(name, tfds.list_builders())}; "
            f"image classification examples: {', '.join(EXAMPLES)}"
        ) from None
    if builder.info.supervised_keys != ("image", "label"):
        raise TltoolError(f"{name} is not an image classification dataset (its supervised keys are "
                          f"{builder.info.supervised_keys}); try one of {', '.join(EXAMPLES)}")
    if not builder.is_prepared():
        _download(builder, name)
    splits = [s for s in builder.info.splits.keys() if s in SPLIT_FOLDERS] or ["train"]
    return write_folders(builder, dest, splits, limit, progress)


def write_folders(builder, dest: str, splits: list[str], limit: int | None = None,
                  progress: bool = True) -> dict[str, int]:
    """Write each split of a prepared builder as class folders of image files."""
    import tensorflow_datasets as tfds
    from PIL import Image
    from tqdm import tqdm

    names = builder.info.features["label"].names
    png = builder.info.features["image"].encoding_format == "png"
    counts = {}
    for split in splits:
        folder = dest if splits == ["train"] else os.path.join(dest, SPLIT_FOLDERS[split])
        ds = builder.as_dataset(split=split, as_supervised=True)
        if limit:
            ds = ds.take(limit)
        written = 0
        for i, (image, label) in enumerate(tqdm(tfds.as_numpy(ds), desc=f"writing {split}", unit="img",
                                                disable=None if progress else True, leave=False)):
            target = os.path.join(folder, names[int(label)])
            os.makedirs(target, exist_ok=True)
            picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
            picture.save(os.path.join(target, f"{split}_{i:06d}.{'png' if png else 'jpg'}"),
                         **({} if png else {"quality": 95}))
            written += 1
        counts[os.path.relpath(folder, dest) if folder != dest else "."] = written
    return counts


def _download(builder, name: str) -> None:
    reason = _network_problem()
    if reason is None:
        import requests

        try:
            builder.download_and_prepare()
            return
        except (OSError, requests.RequestException) as e:  # network and disk; anything else is a bug
            reason = str(e).splitlines()[0][:200]
    raise UnavailableError(
        f"cannot download {name} ({reason}); run `tltool datasets export {name} DIR` on a machine with "
        f"internet and copy DIR here, or pass --data-dir with a folder where tensorflow-datasets already "
        f"prepared {name}"
    )


def _network_problem() -> str | None:
    """None if the download host answers; else why not (proxy settings honoured)."""
    import requests

    try:
        requests.head(_PROBE_URL, timeout=10)
        return None
    except requests.RequestException as e:
        return f"no network: {type(e).__name__}"
