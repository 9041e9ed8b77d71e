"""tltool: transfer learning for image classification on Keras 3.

The command line (`tltool fit DATA --backbone NAME`) is a thin shell over the
functions re-exported here, so a notebook can do the same work:

    import tltool
    run = tltool.fit("data/", backbone="resnet50")    # a tltool.Run
    tltool.evaluate(run, "data/test")
    model = tltool.load_model(run)                      # the keras.Model

Importing this package does not import TensorFlow; the heavy modules load on
first use. The packages behind these functions are named for what they hold
(`evaluation`, `serving`, `workflows`), never like the functions, so that
importing one can never replace `tltool.evaluate` by a module.
"""

__version__ = "0.1.0"

_API = ("fit", "lr_find", "evaluate", "predict", "explain", "audit", "export", "load_model", "open_run", "Run", "plan",
        "validate_recipe", "backbones")
_LAZY = {"load_recipe": "tltool.recipe", "get_backbone": "tltool.models.registry"}


def __getattr__(name):
    if name in _API:
        from tltool import api

        return getattr(api, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tltool' has no attribute {name!r}")
