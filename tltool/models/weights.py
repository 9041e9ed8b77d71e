"""Building a backbone with its starting weights: ImageNet, a file, or none."""

from __future__ import annotations

import os
import re
import warnings

from tltool.models.applications import BackboneSpec
from tltool.errors import TltoolError, UnavailableError

WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5")


def weights_source(weights: str) -> str:
    """Normalise a --weights value: 'imagenet', 'none' or an absolute path."""
    lowered = weights.strip().lower()
    if lowered in ("imagenet", "none"):
        return lowered
    return os.path.abspath(os.path.expanduser(weights))


def load_backbone(spec: BackboneSpec, image_size: int, weights: str = "imagenet"):
    """Build `spec`'s backbone without its classifier, at `image_size`.

    Args:
        spec: registry entry.
        image_size: side of the square input.
        weights: 'imagenet' (Keras' download and cache), 'none' (random
            initialisation) or a path to a ``.weights.h5`` / ``.h5`` file.

    Returns:
        The backbone, a functional keras.Model named ``backbone``.

    Raises:
        UnavailableError: ImageNet weights cannot be downloaded.
        TltoolError: a bad weights path, or a size below the minimum.
    """
    import keras

    check_image_size(spec, image_size)
    source = weights_source(weights)
    build = getattr(keras.applications, spec.constructor)
    kwargs = dict(include_top=False, input_shape=(image_size, image_size, 3), **spec.kwargs)
    if source == "imagenet":
        try:
            with warnings.catch_warnings():
                # MobileNets at sizes without their own weights load the 224 px
                # ones and say so; the same weights fit any size.
                warnings.filterwarnings("ignore", message=".*input_shape` is undefined or non-square")
                model = build(weights="imagenet", **kwargs)
        except Exception as e:  # Keras wraps download failures in a bare Exception
            if _is_network_error(e):
                raise UnavailableError(_offline_message(spec, e)) from None
            raise
    else:
        model = build(weights=None, **kwargs)
        if source != "none":
            _load_file(model, spec, source)
    model.name = "backbone"
    return model


def _is_network_error(error: BaseException | None) -> bool:
    """A download that failed on the network (refused, unresolved, timed out), seen along the cause chain.

    Keras re-raises those as a bare Exception ("URL fetch failure ...");
    any other error on the way (a bad cached file, a bug) is not "offline".
    """
    import urllib.error

    while error is not None:
        if isinstance(error, (urllib.error.URLError, ConnectionError, TimeoutError)):
            return True
        error = error.__cause__ or error.__context__
    return False


def check_image_size(spec: BackboneSpec, image_size: int) -> None:
    if image_size < spec.min_size:
        raise TltoolError(
            f"--image-size {image_size} is below {spec.name}'s minimum of {spec.min_size}; "
            f"use at least {spec.min_size} (default {spec.default_size})"
        )


def keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def _offline_message(spec: BackboneSpec, error: Exception) -> str:
    url = re.search(r"https?://\S+?(?=:\s|$)", str(error))
    filename = os.path.basename(url.group(0)) if url else "its weights file"
    reason = str(error).split(" -- ")[-1] if " -- " in str(error) else str(error)
    return (
        f"cannot download ImageNet weights for {spec.name} ({reason.strip()}). "
        f"Keras looked for {filename} in {keras_models_dir()} "
        f"(~/.keras/models, or $KERAS_HOME/models): put the file there, "
        f"or pass --weights PATH (a weights file for {spec.name}), "
        f"or --weights none (random initialisation, no transfer)"
    )


def _load_file(model, spec: BackboneSpec, path: str) -> None:
    if not os.path.isfile(path):
        raise TltoolError(
            f"--weights {path}: no such file; give imagenet, none, or the path of a "
            f".weights.h5/.h5 file for {spec.name}"
        )
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise TltoolError(f"--weights {path}: not a .weights.h5 or .h5 file")
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:  # wrong shapes or layers, not an HDF5 file
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise TltoolError(
            f"--weights {path}: does not fit {spec.name} at this input size ({detail}); "
            f"give a weights file saved from {spec.name} without its top"
        ) from None
