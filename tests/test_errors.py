"""Errors say what happened: a bug or a lack of memory is never reported as the user's bad file or no network."""

import urllib.error

import pytest
from PIL import Image

from tltool.data.images import ImageError, check_image


def test_memory_error_while_decoding_is_not_a_corrupt_file(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    assert check_image(str(path)).format == "PNG"

    def out_of_memory(self):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "load", out_of_memory)
    with pytest.raises(MemoryError):
        check_image(str(path))
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(OSError("image file is truncated")))
    with pytest.raises(ImageError, match="truncated"):
        check_image(str(path))


def _keras_style(cause):
    """How keras.utils.get_file reports a failed download: a bare Exception raised while handling the cause."""
    try:
        raise cause
    except Exception:
        try:
            raise Exception("URL fetch failure on https://example/x.h5: None -- reason")
        except Exception as e:
            return e


def test_only_network_failures_count_as_offline():
    from tltool.models.weights import is_network_error as _is_network_error

    assert _is_network_error(_keras_style(urllib.error.URLError("refused")))
    assert _is_network_error(_keras_style(ConnectionResetError()))
    assert not _is_network_error(_keras_style(ValueError("bad checksum")))
    assert not _is_network_error(OSError("unable to open file (truncated file)"))  # a bad cached file


def test_a_bug_while_loading_a_weights_file_is_not_a_user_error(tmp_path, monkeypatch):
    import keras

    from tltool.errors import TltoolError
    from tltool.models.registry import get_backbone
    spec = get_backbone("mobilenetv2")
    path = tmp_path / "b.weights.h5"
    spec.build(32, "none").model.save_weights(str(path))

    def broken(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(keras.Model, "load_weights", broken)
    with pytest.raises(RuntimeError):
        spec.build(32, str(path))
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: (_ for _ in ()).throw(ValueError("shape")))
    with pytest.raises(TltoolError, match="does not fit"):
        spec.build(32, str(path))


def test_a_sweep_that_diverges_at_once_is_a_user_error_with_advice():
    import numpy as np

    from tltool.errors import TltoolError
    from tltool.training.lr_find import _suggest

    with pytest.raises(TltoolError, match="diverged at once: 1 finite loss.*fixed learning_rate"):
        _suggest(np.array([1e-7]), np.array([2.3]), np.array([2.3]))


def test_a_type_error_while_loading_a_model_is_a_bug_not_a_user_error(tmp_path, monkeypatch):
    import keras

    from tltool.serving.loading import load_trained

    path = tmp_path / "m.keras"
    path.write_bytes(b"PK")

    def broken(*args, **kwargs):
        raise TypeError("a bug in a layer's from_config")

    monkeypatch.setattr(keras.models, "load_model", broken)
    with pytest.raises(TypeError, match="a bug"):
        load_trained(str(path))
