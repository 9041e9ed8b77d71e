"""The tf.data input pipeline: decode -> fit -> cache -> shuffle -> batch -> prefetch.

Every file becomes the model's input through `tltool.data.contract`, the same ops
the exported SavedModel runs: JPEG, PNG, GIF, BMP and WebP are decoded by
TensorFlow, anything else (TIFF, ...) by Pillow through `tf.numpy_function`
in the same parallel map (Pillow releases the GIL while decoding); then the
aspect policy and an anti-aliased resize:

- ``stretch``: resize to the target, ignoring aspect ratio (the default, as in
  Keras' `image_dataset_from_directory`; nothing is cut off);
- ``crop``: centre-crop to a square, then resize;
- ``pad``: letterbox with black bars to a square, then resize.

Decoded, resized images are cached as uint8, in memory when they fit in a
quarter of the machine's RAM, otherwise in files under the run directory. The
caller shuffles the sample list once with the seed; the pipeline then
shuffles within a bounded window, with a seed per epoch, so memory stays
bounded for datasets larger than RAM.
"""

from __future__ import annotations

import os

import numpy as np

_SHUFFLE_WINDOW_BYTES = 64 * 2**20


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_budget() -> int:
    """Bytes we allow a cache to take in RAM: $TLTOOL_MEMORY_BUDGET (e.g. 512M, 4G), else a quarter of
    physical memory."""
    given = os.environ.get("TLTOOL_MEMORY_BUDGET", "").strip().upper().removesuffix("B").removesuffix("I")
    if given:
        number, unit = given.rstrip("KMGT"), given[len(given.rstrip("KMGT")):]
        if not number.isdigit() or unit not in _UNITS:
            from tltool.errors import TltoolError

            raise TltoolError(f"TLTOOL_MEMORY_BUDGET={os.environ['TLTOOL_MEMORY_BUDGET']}: give bytes, or a "
                              "number with K, M, G or T (e.g. 4G)")
        return int(number) * _UNITS[unit]
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return total // 4


def choose_cache(policy: str, n_images: int, image_size: int, disk_dir: str | None) -> str | None:
    """Resolve a cache policy to "" (memory), a file prefix (disk) or None.

    Args:
        policy: auto | memory | disk | none.
        n_images: images to cache.
        image_size: side of the cached square images.
        disk_dir: folder for a disk cache; None forbids one.
    """
    if policy == "none":
        return None
    size = n_images * image_size * image_size * 3
    if policy == "memory" or (policy == "auto" and size <= memory_budget()):
        return ""
    if disk_dir is None:
        return None
    os.makedirs(disk_dir, exist_ok=True)
    return os.path.join(disk_dir, "images")


def finish(ds):
    """Options for every dataset tltool iterates.

    tf.data's autotuning thread (TF 2.21) sometimes delays the destruction of
    a finished iterator by ~10 s, and Keras drops one every epoch; with
    autotuning off, AUTOTUNE parallelism resolves to the number of cores and
    throughput measured the same (benchmarks/input_pipeline.py). Automatic
    sharding is off: under multi-worker training each worker's dataset is
    already its share (`tltool.training.distribute`), cut from the list of paths.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def decode_dataset(paths: list[str], image_size: int, aspect: str, ordered: bool = True):
    """Dataset of (uint8 image, index into `paths`), in `paths` order unless not `ordered`.

    A file that fails to decode (changed since the scan) is dropped with a
    warning in the log rather than stopping training; the index keeps labels
    and predictions aligned with their files.
    """
    import tensorflow as tf

    from tltool.data import contract
    from tltool.data.images import load_image, read_format

    with_tf = [read_format(p) in contract.TF_FORMATS for p in paths]

    def with_pillow(path):
        image = tf.numpy_function(lambda p: load_image(p.decode("utf-8")), [path], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        return image

    def decode(path, native, index):
        image = tf.cond(native, lambda: contract.decoder(image_size)(tf.io.read_file(path)),
                        lambda: with_pillow(path))
        return contract.fit_to_square(image, image_size, aspect), index

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, dtype=tf.string), tf.constant(with_tf, dtype=tf.bool), tf.range(len(paths))))
    # The contract is written in explicit tf.cond / tf.while_loop: AutoGraph's conversion would only add
    # seconds of tracing to every pipeline.
    ds = ds.map(tf.autograph.experimental.do_not_convert(decode), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=ordered)
    return ds.ignore_errors(log_warning=True)


def labelled_images(paths: list[str], labels: list[int], image_size: int, aspect: str = "stretch",
                    cache: str | None = None):
    """Unbatched (uint8 image, target, index) in `paths` order, decoded once.

    Args:
        paths: image files, already in the order to cache them.
        labels: target per path (a class index, or a vector: the task's `targets`).
        image_size: side of the square model input.
        aspect: stretch | crop | pad.
        cache: "" caches in memory, a path prefix caches on disk, None not at all.
    """
    import tensorflow as tf

    label_table = tf.constant(np.asarray(labels))
    ds = decode_dataset(paths, image_size, aspect)
    ds = ds.map(lambda image, i: (image, tf.gather(label_table, i), i))
    return ds.cache(cache) if cache is not None else ds


def to_batches(images, encode, batch_size: int, shuffle_seed: int | None = None,
               window: int | None = None, augmenter=None, mixer=None, repeat: bool = False):
    """Batches of (float32 images 0-255, encoded targets) for Keras `fit`.

    Args:
        images: from `labelled_images`.
        encode: batched targets -> what the loss takes (the task's `encode`,
            one-hot vectors for a single label).
        shuffle_seed: shuffle within `window` elements with this seed (the
            same order on every pass; a new seed gives a new order); None
            keeps the order.
        augmenter: augmentation layers to run here, on the CPU, instead of in
            the model (for XLA, which cannot compile them).
        mixer: (images, labels) -> (images, labels) that mixes pairs of
            training images and their labels (MixUp, CutMix).
        repeat: repeat the batches without end, for training a fixed number
            of steps per epoch: a pass is ceil(N / batch) batches, and a file
            that fails to decode only makes the epoch run into the next pass,
            never shortens it.
    """
    import tensorflow as tf

    ds = images.map(lambda image, label, index: (image, label))
    if shuffle_seed is not None:
        ds = ds.shuffle(window, seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), encode(y)),
                num_parallel_calls=tf.data.AUTOTUNE)
    # Random layers run one batch at a time, so their random streams are
    # drawn in batch order and a seeded epoch is the same every time.
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y))
    if mixer is not None:
        ds = ds.map(mixer)
    return finish(ds.prefetch(tf.data.AUTOTUNE))


def shuffle_window(n: int, image_size: int) -> int:
    """Shuffle buffer: the whole split when it is small, else ~64 MiB of images (at least 256).

    The sample list is shuffled once with the seed before caching, so a
    window reshuffled every epoch still mixes classes; a small one keeps
    memory bounded and the first batch of an epoch quick to arrive.
    """
    per_image = image_size * image_size * 3
    return max(1, min(n, max(256, _SHUFFLE_WINDOW_BYTES // per_image)))


def count_images(images) -> int:
    """How many elements a dataset from `labelled_images` yields: the files that decode."""
    import tensorflow as tf

    return int(images.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def require_decoded(decoded: int, expected: int) -> None:
    """Training must not run on far fewer images than the scan found, and never on none.

    The pipeline skips a file that fails to decode (changed since the scan,
    or refused by TensorFlow's decoder) so that one bad file never stops a
    run; this check keeps those skips from hiding an epoch that trains on
    nothing.

    Raises:
        DatasetError: fewer than half the images decode.
    """
    from tltool.console import warn
    from tltool.errors import DatasetError

    if decoded < max(1, expected / 2):
        raise DatasetError(f"only {decoded} of the {expected} training images decode now (the others changed, "
                           "moved or cannot be read since the scan); check them with `tltool inspect` and start "
                           "the run again")
    if decoded < expected:
        warn(f"{expected - decoded} of the {expected} training images no longer decode; training on the other "
             f"{decoded}")


def describe_cache(cache: str | None, images: int, size: int, folder: str) -> str:
    megabytes = images * size * size * 3 / 2**20
    if cache is None:
        return "decoded images are not cached (data.cache: none): every epoch decodes them again"
    where = "in memory" if cache == "" else f"on disk in {folder}, removed when the run ends"
    return f"decoded images cached {where} ({megabytes:,.0f} MB for {images} images)"
