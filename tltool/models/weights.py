"""Starting weights, whatever the source: what --weights means, weight files, and the rules every source shares."""

from __future__ import annotations

import os

from tltool.errors import TltoolError

WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5")
PRETRAINED = ("imagenet", "pretrained")


def weights_source(weights: str) -> str:
    """Normalise a --weights value: 'imagenet' (also for 'pretrained'), 'none' or an absolute path."""
    lowered = weights.strip().lower()
    if lowered in PRETRAINED:
        return "imagenet"
    if lowered == "none":
        return "none"
    return os.path.abspath(os.path.expanduser(weights))


def check_weights_file(weights: str, backbone: str | None = None) -> None:
    """A --weights PATH exists and is a weights file; imagenet and none pass.

    Raises:
        TltoolError: no such file, or not a .weights.h5/.h5 file.
    """
    source = weights_source(weights)
    if source in ("imagenet", "none"):
        return
    what = f" for {backbone}" if backbone else ""
    if not os.path.isfile(source):
        raise TltoolError(f"--weights {weights}: no such file; give imagenet, none, or the path of a "
                          f".weights.h5/.h5 file{what}")
    if not source.endswith(WEIGHT_FILE_SUFFIXES):
        raise TltoolError(f"--weights {weights}: not a .weights.h5 or .h5 file")


def check_image_size(spec, image_size: int) -> None:
    """The one rule for a backbone's smallest input.

    Raises:
        TltoolError: `image_size` is below the backbone's minimum.
    """
    if image_size < spec.min_size:
        raise TltoolError(
            f"--image-size {image_size} is below {spec.name}'s minimum of {spec.min_size}; "
            f"use at least {spec.min_size} (default {spec.default_size})"
        )


def is_network_error(error: BaseException | None) -> bool:
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


def keras_models_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def load_weights_file(model, backbone: str, path: str) -> None:
    """Load a weights file into a built network.

    Raises:
        TltoolError: no such file, not a weights file, or weights of another network.
    """
    check_weights_file(path, backbone)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:  # wrong shapes or layers, not an HDF5 file
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise TltoolError(
            f"--weights {path}: does not fit {backbone} at this input size ({detail}); "
            f"give a weights file saved from {backbone} without its top"
        ) from None
