"""The tf.data input pipeline: decode -> resize -> cache -> shuffle -> batch -> prefetch.

Plain JPEG/PNG files are decoded by TensorFlow, everything else (CMYK,
16-bit, transparency, EXIF rotation, other formats, very large images) by
Pillow through `tf.numpy_function` in the same parallel map (Pillow releases
the GIL while decoding). Pillow already shrinks anything at least
twice the target (JPEG draft mode, box reduction), so the Keras `Resizing`
layer that follows uses plain bilinear interpolation: anti-aliasing would cost
2.6x the decode time for no visible gain. The exported SavedModel uses the
same layer with anti-aliasing, as it gets raw images of any size. Both apply
the aspect-ratio policy:

- ``stretch``: resize to the target, ignoring aspect ratio (the default, as in
  Keras' `image_dataset_from_directory`; nothing is cut off);
- ``crop``: centre-crop to the target's aspect ratio, then resize;
- ``pad``: letterbox with black bars to the target's aspect ratio, then resize.

Decoded, resized images are cached as uint8, in memory when they fit in a
quarter of the machine's RAM, otherwise in files under the run directory. The
caller shuffles the sample list once with the seed; the pipeline then
reshuffles within a bounded window every epoch, so memory stays bounded for
datasets larger than RAM.
"""

from __future__ import annotations

import os

import numpy as np

_CODECS = {"JPEG": 1, "PNG": 2}  # 0: Pillow
_SHUFFLE_WINDOW_BYTES = 64 * 2**20


def make_resizer(image_size: int, aspect: str, antialias: bool = False):
    """A Keras Resizing layer implementing an aspect-ratio policy (always float32,
    whatever the mixed-precision policy of the model)."""
    import keras

    return keras.layers.Resizing(
        image_size, image_size, interpolation="bilinear", antialias=antialias,
        crop_to_aspect_ratio=aspect == "crop", pad_to_aspect_ratio=aspect == "pad",
        name=f"resize_{aspect}", dtype="float32",
    )


def memory_budget() -> int:
    """Bytes we allow a cache to take in RAM: a quarter of physical memory."""
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
    throughput measured the same (benchmarks/input_pipeline.py).
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def decode_dataset(paths: list[str], image_size: int, aspect: str, ordered: bool = True):
    """Dataset of (uint8 image, index into `paths`), in `paths` order unless not `ordered`.

    Plain JPEG/PNG files (see `images.plain_format`) are decoded by
    TensorFlow, the rest by Pillow, with identical pixels. A file that fails
    to decode (changed since the scan) is dropped with a warning in the log
    rather than stopping training; the index keeps labels and predictions
    aligned with their files.
    """
    import tensorflow as tf

    from tltool.data.images import load_image, plain_format

    resizer = make_resizer(image_size, aspect)
    hint = (image_size, image_size)
    codecs = [_CODECS.get(plain_format(p, hint), 0) for p in paths]

    def load(path):
        return load_image(path.decode("utf-8"), hint)

    def with_pillow(path):
        image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
        image.set_shape([None, None, 3])
        return image

    def jpeg(path):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")

    def png(path):
        return tf.io.decode_png(tf.io.read_file(path), channels=3)

    def decode(path, codec, index):
        image = tf.switch_case(codec, [lambda: with_pillow(path), lambda: jpeg(path), lambda: png(path)])
        image = resizer(tf.cast(image, tf.float32))
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8), index

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, dtype=tf.string), tf.constant(codecs, dtype=tf.int32), tf.range(len(paths))))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    return ds.ignore_errors(log_warning=True)


def labelled_images(paths: list[str], labels: list[int], image_size: int, aspect: str = "stretch",
                    cache: str | None = None):
    """Unbatched (uint8 image, label, index) in `paths` order, decoded once.

    Args:
        paths: image files, already in the order to cache them.
        labels: class index per path.
        image_size: side of the square model input.
        aspect: stretch | crop | pad.
        cache: "" caches in memory, a path prefix caches on disk, None not at all.
    """
    import tensorflow as tf

    label_table = tf.constant(np.asarray(labels, np.int32))
    ds = decode_dataset(paths, image_size, aspect)
    ds = ds.map(lambda image, i: (image, tf.gather(label_table, i), i))
    return ds.cache(cache) if cache is not None else ds


def to_batches(images, num_classes: int, batch_size: int, shuffle_seed: int | None = None,
               window: int | None = None, augmenter=None):
    """Batches of (float32 images 0-255, one-hot labels) for Keras `fit`.

    Args:
        images: from `labelled_images`.
        shuffle_seed: reshuffle every epoch within `window` elements; None
            keeps the order.
        augmenter: augmentation layers to run here, on the CPU, instead of in
            the model (for XLA, which cannot compile them).
    """
    import tensorflow as tf

    ds = images.map(lambda image, label, index: (image, label))
    if shuffle_seed is not None:
        ds = ds.shuffle(window, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)),
                num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return finish(ds.prefetch(tf.data.AUTOTUNE))


def shuffle_window(n: int, image_size: int) -> int:
    """Shuffle buffer: the whole split when it is small, else ~64 MiB of images (at least 256).

    The sample list is shuffled once with the seed before caching, so a
    window reshuffled every epoch still mixes classes; a small one keeps
    memory bounded and the first batch of an epoch quick to arrive.
    """
    per_image = image_size * image_size * 3
    return max(1, min(n, max(256, _SHUFFLE_WINDOW_BYTES // per_image)))
