"""tltool: transfer learning for image classification on Keras 3.

The command line (`tltool fit DATA --backbone NAME`) is a thin shell over the
functions re-exported here, so a notebook can do the same work:

    import tltool
    run = tltool.fit("data/", backbone="resnet50")
    tltool.evaluate(run, "data/test")

Importing this package does not import TensorFlow; the heavy modules load on
first use.
"""

__version__ = "0.1.0"

_LAZY = {
    "fit": "tltool.train",
    "evaluate": "tltool.evaluate",
    "predict": "tltool.predict",
    "export": "tltool.export",
    "load_recipe": "tltool.recipe",
    "get_backbone": "tltool.backbones",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tltool' has no attribute {name!r}")
