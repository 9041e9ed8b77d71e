"""Reading one image file: recognise it by content, decode it to 8-bit RGB.

Pillow checks every file at scan time (`check_image`) and decodes the formats
TensorFlow cannot (TIFF, ...) with the rules of `tltool.data.contract`: EXIF
orientation applied; grayscale, palette, RGBA/LA (composited on white),
16-bit and CMYK converted to 8-bit RGB. Pillow releases the GIL while it
decodes, so a thread pool or a parallel `tf.data` map scales across cores.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Pillow refuses images above 2 x MAX_IMAGE_PIXELS (~179 megapixels) as
# decompression bombs; that is our limit too, reported as "too large".
_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

_SIGNATURES = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]
_UNSUPPORTED_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}


# What Pillow's decoders raise on bad data. MemoryError, KeyboardInterrupt and
# bugs are not among them: they propagate instead of calling a file corrupt.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError)


class ImageError(Exception):
    """A file that cannot be used as an image; str(error) is the reason."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    sha1: str  # the content hash: files with the same bytes are exact duplicates
    phash: str  # the perceptual hash (`perceptual_hash`), 16 hex digits: near duplicates are a few bits apart


def sniff(head: bytes) -> str | None:
    """Return the format named by a file's first bytes, or None."""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _UNSUPPORTED_BRANDS:
        return _UNSUPPORTED_BRANDS[head[8:12]]
    return None


def read_format(path: str) -> str | None:
    """The format named by a file's first bytes, or None (also when unreadable)."""
    try:
        with open(path, "rb") as f:
            return sniff(f.read(32))
    except OSError:
        return None


def check_image(path: str) -> ImageInfo:
    """Decode a file once to prove it is a usable image.

    Raises:
        ImageError: with a short reason: ``empty file``, ``not an image``,
            ``unsupported format (HEIC)``, ``truncated``, ``too large (...)``,
            ``corrupt (...)``.
    """
    data = _read(path)
    fmt = _format_of(data)
    with _open(data, fmt) as img:
        width, height, mode = img.width, img.height, img.mode
        pixels = _to_rgb_array(img, (224, 224))
    return ImageInfo(fmt, width, height, mode, hashlib.sha1(data).hexdigest(), perceptual_hash(pixels))


def perceptual_hash(pixels: np.ndarray) -> str:
    """pHash (Zauner, 2010; as imagehash.phash computes it): the grey image at 32 x 32, its 2-D DCT, and one
    bit per coefficient of the lowest 8 x 8 frequencies, set where it is above their median. Re-encoding,
    rescaling and a shift of a pixel or two change few of its 64 bits; different images about half.

    Returns:
        16 hex digits.
    """
    from scipy.fft import dct

    grey = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    coefficients = dct(dct(np.asarray(grey, np.float64), axis=0), axis=1)[:8, :8]
    bits = (coefficients > np.median(coefficients)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def load_image(path: str, size_hint: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a file to an (H, W, 3) uint8 RGB array.

    Args:
        path: the image file.
        size_hint: (height, width) the caller will resize to; lets JPEGs
            decode at reduced scale and huge images shrink early. The result
            is never smaller than the hint unless the image itself is.

    Raises:
        ImageError: as for `check_image`.
    """
    data = _read(path)
    fmt = _format_of(data)
    with _open(data, fmt) as img:
        return _to_rgb_array(img, size_hint)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"unreadable ({e.strerror or e})") from None
    if not data:
        raise ImageError("empty file")
    return data


def _format_of(data: bytes) -> str:
    fmt = sniff(data[:32])
    if fmt is None:
        raise ImageError("not an image")
    if fmt in _UNSUPPORTED_BRANDS.values():
        raise ImageError(f"unsupported format ({fmt})")
    return fmt


def _open(data: bytes, fmt: str) -> Image.Image:
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError("too large (over Pillow's decompression-bomb limit)") from None
    except DECODE_ERRORS as e:
        raise ImageError(_reason(e, fmt)) from None
    if img.width * img.height > _MAX_PIXELS:
        raise ImageError(f"too large ({img.width}x{img.height} pixels)")
    return img


def _to_rgb_array(img: Image.Image, size_hint: tuple[int, int] | None) -> np.ndarray:
    try:
        if size_hint and img.format == "JPEG":
            img.draft("RGB", (size_hint[1], size_hint[0]))
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _reduce(img, size_hint)
        return _to_rgb(img)
    except DECODE_ERRORS as e:
        raise ImageError(_reason(e)) from None


def _reduce(img: Image.Image, size_hint: tuple[int, int] | None) -> Image.Image:
    """Box-reduce an image at least twice the target in both dimensions.

    The result is still at least the target size but under twice it in one
    dimension, so the plain bilinear resize that follows does not alias.
    """
    if not size_hint:
        return img
    factor = min(img.height // size_hint[0], img.width // size_hint[1])
    if factor >= 2 and img.mode in ("L", "RGB", "RGBA", "LA", "I", "I;16", "F", "CMYK"):
        return img.reduce(factor)
    return img


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(np.asarray(img), mode)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _high_depth_to_rgb(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit and 32-bit grayscale to 8 bits, scaled rather than clipped."""
    array = array.astype(np.float64)
    if mode == "F":
        top = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if array.max(initial=0.0) > 255 else 255.0
    gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _reason(error: Exception, fmt: str | None = None) -> str:
    text = str(error).strip() or type(error).__name__
    lowered = text.lower()
    if "truncated" in lowered or "broken data stream" in lowered or "premature end" in lowered:
        return "truncated"
    if "cannot identify image file" in lowered:  # a file whose first bytes name a format is a broken one
        return f"corrupt ({fmt} header, but no image Pillow can read)" if fmt else "not an image"
    if "decoder" in lowered and "not available" in lowered:
        return f"unsupported format ({text})"
    return f"corrupt ({text.splitlines()[0][:120]})"
