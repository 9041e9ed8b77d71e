"""Reading real files of every awkward kind: used correctly, or skipped with the right reason."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tltool.data.check import check_files
from tltool.data.images import ImageError, check_image, load_image

RNG = np.random.default_rng(0)
PHOTO = RNG.uniform(0, 255, (60, 80, 3)).astype(np.uint8)


def encoded(array, fmt, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("name, data, reason", [
    ("half.jpg", encoded(PHOTO, "JPEG")[:900], "truncated"),
    ("half.png", encoded(PHOTO, "PNG")[:4000], "truncated"),
    ("zero.jpg", b"", "empty file"),
    ("notes.png", b"these are my notes, not a picture", "not an image"),
    ("phone.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "unsupported format (HEIC)"),
    ("garbled.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) * 8, "corrupt (JPEG header, but no image Pillow can read)"),
    ("garbled.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2, "corrupt (PNG header, but no image Pillow can read)"),
])
def test_unusable_files_are_reported_with_their_reason(tmp_path, name, data, reason):
    with pytest.raises(ImageError) as caught:
        check_image(write(tmp_path, name, data))
    assert str(caught.value) == reason


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    png = bytearray(encoded(np.zeros((1, 1), np.uint8), "PNG"))
    png[16:24] = struct.pack(">II", 30000, 30000)  # IHDR claims 900 megapixels
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(png[16:29])) & 0xFFFFFFFF)
    with pytest.raises(ImageError, match="too large"):
        check_image(write(tmp_path, "bomb.png", bytes(png)))


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"),
                                      ("WEBP", "webp"), ("TIFF", "tiff")])
def test_every_supported_format_decodes_to_rgb(tmp_path, fmt, ext):
    path = write(tmp_path, f"x.{ext.upper()}", encoded(PHOTO, fmt))
    info = check_image(path)
    image = load_image(path)
    assert info.format == fmt and image.shape == (60, 80, 3) and image.dtype == np.uint8
    if fmt in ("PNG", "BMP", "TIFF"):
        np.testing.assert_array_equal(image, PHOTO)


def test_exif_orientation_is_applied(tmp_path):
    halves = np.zeros((40, 60, 3), np.uint8)
    halves[:, 30:] = 255  # left black, right white
    img = Image.fromarray(halves)
    exif = img.getexif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    image = load_image(write(tmp_path, "phone.jpg", buf.getvalue()))
    assert image.shape == (60, 40, 3)
    assert image[:25].mean() < 20 and image[35:].mean() > 235  # the left half is now on top


def test_cmyk_jpeg_becomes_rgb_with_its_colours(tmp_path):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    cmyk = Image.fromarray(red).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    path = write(tmp_path, "print.jpg", buf.getvalue())
    assert check_image(path).mode == "CMYK"
    image = load_image(path).reshape(-1, 3).mean(axis=0)
    assert image[0] > 180 and image[1] < 40 and image[2] < 40


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    depth = np.full((10, 20), 1000, np.uint16)
    depth[:, 10:] = 60000
    path = write(tmp_path, "depth.png", encoded(depth, "PNG"))
    assert check_image(path).mode.startswith("I")
    image = load_image(path)
    assert image.shape == (10, 20, 3)
    assert image[0, 0].tolist() == [4, 4, 4] and image[0, 15].tolist() == [233, 233, 233]


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :4, 3] = 255  # left half opaque red, right half fully transparent
    image = load_image(write(tmp_path, "cutout.png", encoded(rgba, "PNG")))
    assert image[0, 0].tolist() == [200, 0, 0] and image[0, 7].tolist() == [255, 255, 255]
    palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.ADAPTIVE, colors=4)
    buf = io.BytesIO()
    palette.save(buf, "PNG", transparency=palette.getpixel((0, 0)))
    image = load_image(write(tmp_path, "pal.png", buf.getvalue()))
    assert image[0, 0].tolist() == [255, 255, 255]


def test_grayscale_and_animated_gif_become_rgb(tmp_path):
    gray = load_image(write(tmp_path, "g.jpg", encoded(PHOTO[..., 0], "JPEG")))
    assert gray.shape == (60, 80, 3) and (gray[..., 0] == gray[..., 2]).all()
    frames = [Image.fromarray(PHOTO), Image.fromarray(255 - PHOTO)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(write(tmp_path, "anim.gif", buf.getvalue())).shape == (60, 80, 3)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    big = np.tile(PHOTO, (60, 60, 1))  # 4800 x 3600
    path = write(tmp_path, "big.jpg", encoded(big, "JPEG"))
    image = load_image(path, size_hint=(224, 224))
    assert 224 <= min(image.shape[:2]) and max(image.shape[:2]) <= 4 * 224 * 2
    assert check_image(path).width == 4800


def test_content_not_extension_decides(tmp_path):
    path = write(tmp_path, "IMG_0001", encoded(PHOTO, "PNG"))
    assert check_image(path).format == "PNG"


def test_checks_are_cached_by_size_and_mtime(tmp_path):
    path = write(tmp_path, "a.png", encoded(PHOTO, "PNG"))
    assert check_files([path], "key", progress=False)[path].format == "PNG"
    stat = os.stat(path)
    with open(path, "r+b") as f:  # corrupt it in place, same size and mtime
        f.seek(100)
        f.write(b"\x00" * 50)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert check_files([path], "key", progress=False)[path].format == "PNG"  # answered from the cache
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert isinstance(check_files([path], "key", progress=False)[path], str)  # re-checked: now bad


@pytest.mark.parametrize("aspect", ["stretch", "crop", "pad"])
def test_aspect_policies(tmp_path, aspect):
    from tltool.data.pipeline import decode_dataset

    wide = np.zeros((50, 100, 3), np.uint8)  # green | red | blue | green, quarters
    wide[:, :25, 1] = wide[:, 75:, 1] = 255
    wide[:, 25:50, 0] = 255
    wide[:, 50:75, 2] = 255
    path = write(tmp_path, "wide.png", encoded(wide, "PNG"))
    image, index = next(iter(decode_dataset([path], 32, aspect)))
    image = np.asarray(image).astype(int)
    assert image.shape == (32, 32, 3) and int(index) == 0
    middle = image[16]
    if aspect == "crop":  # the centre square: red | blue, the green quarters cut off
        assert middle[2].tolist() == [255, 0, 0] and middle[29].tolist() == [0, 0, 255]
        assert image[..., 1].max() < 30
    else:  # the whole width: green edges
        assert middle[1].tolist() == [0, 255, 0] and middle[30].tolist() == [0, 255, 0]
    bars = image[:6].max() == 0 and image[-6:].max() == 0
    assert bars == (aspect == "pad")  # letterboxing adds black bars above and below
