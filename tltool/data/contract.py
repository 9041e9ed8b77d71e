"""The input contract: how an image file becomes the model's input, everywhere.

Training, evaluation, `predict` and every exported signature call these
functions, so the served model sees exactly the pixels the evaluated one saw.
They are TensorFlow ops, so they live inside the SavedModel too.

Decoding (`decode_bytes`), for JPEG, PNG, GIF (first frame), BMP and WebP:

- JPEG: libjpeg's accurate integer DCT; grayscale and CMYK become RGB; a file
  at least twice the model's size in both sides is decoded at 1/2, 1/4 or
  1/8 scale (the largest that keeps the shorter side at or above the size);
  the EXIF orientation tag, read from the bytes, is applied.
- PNG: 8- or 16-bit, any colour type; 16-bit is scaled to 8 bits (x / 257)
  unless no value exceeds 255 (then it is taken as 8-bit data in a 16-bit
  file); palette and grayscale become RGB; transparency is composited on
  white.
- WebP (first frame) and GIF (first frame): transparency is composited on
  white too. TensorFlow's GIF decoder paints transparent pixels black, so the
  GIF's bytes are patched first: the first frame's transparent colour index is
  made an opaque white palette entry (`_gif_on_white`).
- Other formats Pillow can read (TIFF, ...) are converted by Pillow, on the
  Python paths only, with the same rules (`tltool.data.images.load_image`).

Fitting (`fit_to_square`), for decoded 8-bit RGB of any size: the aspect
policy (`stretch` resizes as it is; `crop` cuts the centred square; `pad`
adds black bars to a centred square), then a bilinear resize with
anti-aliasing to S x S, rounded to 8 bits.

The input tiers an exported model offers (each returns the same probabilities
for the same file):

- (a) encoded image bytes: SavedModel ``serve_bytes``, string (N,); the model
  decodes and fits.
- (b) RGB pixels of any size: SavedModel ``serving_default`` (float32
  (N, H, W, 3), values 0-255, rounded to whole numbers) and ``serve_uint8``;
  the caller decodes (`read_pixels`), the model fits.
- (c) fixed-size RGB pixels: float32 (N, S, S, 3), values 0-255: ``model.keras``
  and formats that cannot resize; the caller decodes and fits
  (`prepare_file`).
"""

from __future__ import annotations

import functools

import numpy as np

VERSION = 2  # 2: transparent GIF and WebP composited on white (1 painted GIF transparency black)
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_EXIF_SCAN_BYTES = 65536 + 16  # an APP1 segment holds at most 64 KiB


def decode_bytes(data, image_size: int):
    """Encoded image bytes (scalar string tensor) -> (H, W, 3) uint8 RGB."""
    import tensorflow as tf

    head = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    is_gif = tf.strings.substr(head, 0, 3) == b"GIF"
    is_webp = (tf.strings.substr(head, 0, 4) == b"RIFF") & (tf.strings.substr(data, 8, 4) == b"WEBP")
    image = tf.case([(is_jpeg, lambda: _decode_jpeg(data, image_size)), (is_png, lambda: _decode_png(data)),
                     (is_gif, lambda: _decode_gif(data)), (is_webp, lambda: _decode_webp(data))],
                    default=lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    image = tf.ensure_shape(image, [None, None, 3])
    return image


@functools.lru_cache(maxsize=None)
def decoder(image_size: int):
    """`decode_bytes` for one size, traced once: every pipeline, export and file of a process reuses the graph
    (tracing the decoders takes about a second)."""
    import tensorflow as tf

    return tf.function(lambda data: decode_bytes(data, image_size), autograph=False,
                       input_signature=[tf.TensorSpec([], tf.string)])


def fit_to_square(images, image_size: int, aspect: str):
    """Decoded uint8 RGB, (H, W, 3) or (N, H, W, 3), any size -> uint8 S x S by the aspect policy."""
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]
    if aspect == "crop":
        side = tf.minimum(height, width)
        images = tf.image.crop_to_bounding_box(images, (height - side) // 2, (width - side) // 2, side, side)
    elif aspect == "pad":
        side = tf.maximum(height, width)
        images = tf.image.pad_to_bounding_box(images, (side - height) // 2, (side - width) // 2, side, side)
    images = tf.image.resize(images, [image_size, image_size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)


def prepare_bytes(data, image_size: int, aspect: str):
    """Tier (a): encoded bytes -> the model's uint8 S x S input."""
    return fit_to_square(decoder(image_size)(data), image_size, aspect)


def pixels_to_uint8(images):
    """Tier (b) float pixels are 8-bit values: rounded and clipped to 0-255."""
    import tensorflow as tf

    if images.dtype == tf.uint8:
        return images
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0.0, 255.0), tf.uint8)


def read_pixels(path: str, image_size: int) -> np.ndarray:
    """Tier (b) for a caller: decode one file as the model would, to (H, W, 3) uint8.

    `image_size` matters only for large JPEGs, which are decoded at reduced
    scale exactly as the model's own decoder does.
    """
    import tensorflow as tf

    from tltool.data.images import load_image, read_format

    if read_format(path) in TF_FORMATS:
        return decoder(image_size)(tf.io.read_file(path)).numpy()
    return load_image(path)


def prepare_file(path: str, image_size: int, aspect: str) -> np.ndarray:
    """Tier (c): one file -> the model's (S, S, 3) uint8 input, as training saw it."""
    return fit_to_square(read_pixels(path, image_size), image_size, aspect).numpy()


# ---------------------------------------------------------------- JPEG


def _decode_jpeg(data, image_size: int):
    import tensorflow as tf

    shape = tf.image.extract_jpeg_shape(data)
    shorter = tf.minimum(shape[0], shape[1])
    # ceil(shorter / r) >= size, the largest r of 8, 4, 2, 1 (libjpeg rounds scaled sides up)
    ratio_index = tf.reduce_sum(tf.cast(
        tf.stack([(shorter + r - 1) // r >= image_size for r in (2, 4, 8)]), tf.int32))
    image = tf.switch_case(ratio_index, [
        (lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
        for r in (1, 2, 4, 8)])
    return orient(image, exif_orientation(data))


def exif_orientation(data):
    """The EXIF orientation tag (1-8) of JPEG bytes; 1 when there is none.

    Finds the first APP1 ``Exif`` segment, reads the TIFF header's byte
    order and the first IFD's entries, and returns tag 0x0112's value.
    """
    import tensorflow as tf

    head = tf.strings.substr(data, 0, _EXIF_SCAN_BYTES)
    raw = tf.io.decode_raw(head + tf.strings.substr(tf.constant(b"\x00" * 64), 0, 64), tf.uint8)
    b = tf.cast(raw, tf.int32)
    n = tf.shape(b)[0] - 64
    pattern = [0xFF, 0xE1, None, None, 0x45, 0x78, 0x69, 0x66, 0x00, 0x00]  # FF E1 len len "Exif\0\0"
    match = tf.ones([n], tf.bool)
    for offset, value in enumerate(pattern):
        if value is not None:
            match &= b[offset:offset + n] == value
    found = tf.reduce_any(match)
    tiff = tf.cast(tf.argmax(tf.cast(match, tf.int32)), tf.int32) + 10

    def at(i):
        return tf.gather(b, tf.clip_by_value(i, 0, tf.shape(b)[0] - 1))

    little = at(tiff) == 0x49

    def u16(i):
        return tf.where(little, at(i) + 256 * at(i + 1), 256 * at(i) + at(i + 1))

    def u32(i):
        return tf.where(little, u16(i) + 65536 * u16(i + 2), 65536 * u16(i) + u16(i + 2))

    ifd = tiff + u32(tiff + 4)
    entries = ifd + 2 + 12 * tf.range(64)
    tags = u16(entries)
    is_orientation = (tags == 0x0112) & (tf.range(64) < u16(ifd))
    value = u16(entries[tf.cast(tf.argmax(tf.cast(is_orientation, tf.int32)), tf.int32)] + 8)
    valid = found & tf.reduce_any(is_orientation) & (value >= 1) & (value <= 8)
    return tf.where(valid, value, 1)


def orient(image, orientation):
    """Apply an EXIF orientation (1-8) to an (H, W, C) image, as Pillow's exif_transpose does."""
    import tensorflow as tf

    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    return tf.switch_case(orientation - 1, [
        lambda: image,                                      # 1
        lambda: tf.reverse(image, [1]),                     # 2 mirrored
        lambda: tf.image.rot90(image, 2),                   # 3 upside down
        lambda: tf.reverse(image, [0]),                     # 4 mirrored vertically
        lambda: transpose(image),                           # 5 transpose
        lambda: tf.image.rot90(image, 3),                   # 6 rotate 90 clockwise
        lambda: tf.image.rot90(transpose(image), 2),        # 7 transverse
        lambda: tf.image.rot90(image, 1),                   # 8 rotate 90 counter-clockwise
    ])


# ---------------------------------------------------------------- PNG


def _decode_png(data):
    import tensorflow as tf

    image = tf.cast(tf.io.decode_png(data, channels=0, dtype=tf.uint16), tf.float32)
    # decode_png as uint16 gives 8-bit files times 257; a 16-bit file whose
    # values all fit in 8 bits is taken as 8-bit data, as Pillow users expect.
    return _on_white(tf.where(tf.reduce_max(image) > 255.0, image / 257.0, image))


def _on_white(image):
    """(H, W, 1-4 channels) float 0-255 -> uint8 RGB, any alpha channel composited on white."""
    import tensorflow as tf

    channels = tf.shape(image)[-1]
    color = tf.cond(channels < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: image[..., :3])
    alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[..., -1:] / 255.0, lambda: tf.ones_like(image[..., :1]))
    rgb = color * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(rgb), 0.0, 255.0), tf.uint8)


# ---------------------------------------------------------------- WebP, GIF


def _decode_webp(data):
    import tensorflow as tf

    # channels=0: TensorFlow refuses any count other than the file's own; an animation is (frames, H, W, 4).
    image = tf.io.decode_webp(data, channels=0)
    image = tf.cond(tf.rank(image) == 4, lambda: image[0], lambda: image)
    image = tf.ensure_shape(tf.reshape(image, tf.shape(image)[-3:]), [None, None, None])
    return _on_white(tf.cast(image, tf.float32))


def _decode_gif(data):
    import tensorflow as tf

    return tf.io.decode_gif(_gif_on_white(data))[0]


_BYTE = [bytes([i]) for i in range(256)]


def _gif_on_white(data):
    """GIF bytes whose first frame has no transparency: its transparent index is opaque white instead.

    Walks the blocks before the first image descriptor (GIF89a: extensions of
    sub-blocks) to the Graphic Control Extension, clears its transparency
    flag and writes white into the colour table entry it named (the frame's
    local table when it has one, else the global one).
    """
    import tensorflow as tf

    b = tf.cast(tf.io.decode_raw(data + b"\x00" * 16, tf.uint8), tf.int32)
    size = tf.shape(b)[0] - 16

    def at(i):
        return tf.gather(b, tf.clip_by_value(i, 0, size + 15))

    def table_bytes(flags):
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)

    start = 13 + table_bytes(at(10))

    def skip_sub_blocks(i):  # i at a sub-block's size byte -> just past the terminating zero
        end = tf.while_loop(lambda j: (j < size) & (at(j) > 0), lambda j: (j + at(j) + 1,), (i,))
        return tf.nest.flatten(end)[0] + 1

    def next_block(i, gce):
        gce = tf.where((at(i + 1) == 0xF9) & (gce < 0), i, gce)
        return skip_sub_blocks(i + 2), gce

    image_at, gce = tf.while_loop(lambda i, gce: (i < size) & (at(i) == 0x21), next_block,
                                  [start, tf.constant(-1)])
    flags = at(gce + 3)
    index = at(gce + 6)
    local = at(image_at + 9)
    table = tf.where(local >= 128, image_at + 10, 13)
    entries = tf.where(local >= 128, table_bytes(local), table_bytes(at(10))) // 3
    usable = (gce >= 0) & (at(image_at) == 0x2C) & (flags % 2 == 1) & (index < entries)

    def patched():
        entry = table + 3 * index
        flag, white = tf.gather(tf.constant(_BYTE), flags - 1), tf.constant(b"\xff\xff\xff")

        def edit(first, first_bytes, first_len, second, second_bytes, second_len):
            return tf.strings.join([
                tf.strings.substr(data, 0, first), first_bytes,
                tf.strings.substr(data, first + first_len, second - first - first_len), second_bytes,
                tf.strings.substr(data, second + second_len, -1)])

        # The global table lies before the extension, a frame's local table after it.
        return tf.cond(entry < gce, lambda: edit(entry, white, 3, gce + 3, flag, 1),
                       lambda: edit(gce + 3, flag, 1, entry, white, 3))

    return tf.cond(usable, patched, lambda: data)
