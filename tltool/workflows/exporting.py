"""`export`: a run's model as SavedModel, .keras, ONNX or LiteRT, each file checked as it is written.

The writers are `tltool.serving.formats` (and `tltool.serving.quantize` for
int8); the check is `tltool.serving.checking`.
"""

from __future__ import annotations

import os
import shutil
import time

from tltool.console import say, warn
from tltool.errors import TltoolError
from tltool.files import atomic_path, write_json
from tltool.serving.checking import calibration_sample, check, file_size
from tltool.serving.formats import (
    ALIASES,
    COMPARED_IMAGES,
    EXTRA,
    FORMATS,
    export_litert,
    export_litert_int8,
    export_onnx,
    export_saved_model,
    model_info,
    tier_c,
)
from tltool.serving.loading import load_trained
from tltool.serving.quantize import FLOAT_LAYERS
from tltool.tasks import get_task


def export(model: str, fmt: str, out: str | None = None, calibration_images: int = 200, int8_io: str = "float",
           max_accuracy_drop: float = 1.0, verify: bool = True, float_layers: str = "auto") -> str:
    """Export a run directory's (or a .keras file's) model as `fmt`, then check the file.

    Args:
        model: a run directory or a .keras file.
        fmt: one of FORMATS (or an alias).
        out: the file or folder to write; default RUN/export/<name>. An
            existing one is never replaced.
        calibration_images: training images that calibrate int8 quantization.
        int8_io: float or uint8 input and output for litert-int8.
        float_layers: litert-int8: auto keeps the layers int8 hurts most in
            float until the file agrees with the Keras model on the top-1 of
            99% of the calibration images; none makes a full-integer file
            (`tltool.serving.quantize`).
        max_accuracy_drop: percentage points of accuracy the file may lose
            against the Keras model (and at least 2 images) before the
            export counts as failed.
        verify: run the file on the run's validation (or test) images.

    Returns:
        The path written.

    Raises:
        TltoolError: a bad path or format, `out` exists, a missing extra.
        ExportCheckFailed: the file loses more accuracy than allowed (it is kept).
    """
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise TltoolError(f"--format {fmt}: give one of {', '.join([*FORMATS, *ALIASES])}")
    _require_extra(fmt)
    trained = load_trained(model)
    task = get_task(trained.task).decided(trained.decision)
    if trained.keras_model is None:
        raise TltoolError(f"{model}: a {trained.kind} is already exported; give its run directory or a .keras file")
    folder = trained.run.export_dir if trained.run else os.path.join(os.path.dirname(trained.source), "export")
    given, out = out, out or os.path.join(folder, FORMATS[fmt])
    if given:
        _check_extension(given, fmt)
    if os.path.exists(out):
        raise TltoolError(f"{out}: exists, and an export is never replaced; move or delete it, or write elsewhere "
                          "with --out")
    if float_layers not in FLOAT_LAYERS:
        raise TltoolError(f"--int8-float-layers {float_layers}: give one of {', '.join(FLOAT_LAYERS)}")
    info = model_info(trained.classes, trained.image_size, trained.aspect, trained.backbone or "unknown", task)
    samples = trained.run.split_files() if trained.run else {}
    start, notes = time.perf_counter(), {}
    if fmt == "savedmodel":
        export_saved_model(trained.keras_model, out, info, task, trained.forward, _gradcam(trained))
    elif fmt == "keras":
        with atomic_path(out) as tmp:
            shutil.copyfile(trained.source, tmp)
        write_json(out + ".json", tier_c(info))
    elif fmt == "onnx":
        export_onnx(trained.keras_model, out, info)
    elif fmt == "litert-int8":
        notes = _int8(trained, out, info, samples, calibration_images, int8_io, float_layers)
    else:
        export_litert(trained.keras_model, out, info, fmt)
    seconds = time.perf_counter() - start
    say(f"wrote {out} ({file_size(out) / 2**20:,.1f} MB) in {seconds:.0f} s")
    if verify:  # a file of the user's choosing gets a report of its own name: never a file of theirs replaced
        report = None if not given else out.rstrip(os.sep) + ".export_report.json"
        check(trained, out, fmt, samples, max_accuracy_drop, task, notes, report)
    return out


def _check_extension(out: str, fmt: str) -> None:
    """The ending each writer needs (Keras' LiteRT export and its .keras loader check it).

    Raises:
        TltoolError: naming the ending to give.
    """
    ending = {"keras": ".keras", "onnx": ".onnx"}.get(fmt, ".tflite" if fmt.startswith("litert") else "")
    if ending and not out.lower().endswith(ending):
        raise TltoolError(f"--out {out}: a {fmt} file ends with {ending}; give e.g. "
                          f"{os.path.splitext(out)[0]}{ending}")


def _gradcam(trained):
    """Grad-CAM's function for the SavedModel's ``gradcam`` signature; None (and a warning) where the backbone
    cannot be looked up."""
    from tltool.evaluation.gradcam import explainer_of

    try:
        return explainer_of(trained).function
    except TltoolError as e:
        warn(f"the SavedModel gets no gradcam signature: {e}")
        return None


def _int8(trained, out: str, info: dict, samples: dict, calibration_images: int, int8_io: str,
          float_layers: str) -> dict:
    calibration = calibration_sample(samples.get("train", []), calibration_images)
    if not calibration:
        raise TltoolError(f"--format litert-int8: the run's training images are not available to calibrate "
                          f"the quantization (dataset {samples.get('root')!r}); restore them")
    result = export_litert_int8(trained.keras_model, out, info, calibration, int8_io, float_layers)
    count = len(result.float_layers)
    images = min(len(calibration), COMPARED_IMAGES)
    if result.float_layers:
        say(f"int8: wrote a file with {count} layer{'s' * (count > 1)} kept in float "
            f"({', '.join(result.float_layers)}), because a full-integer one agreed with the Keras model on only "
            f"{100 * result.full_integer_agreement:.1f}% of {images} calibration images; this one agrees on "
            f"{100 * result.agreement:.1f}%")
    else:
        why = "--int8-float-layers none" if float_layers == "none" else "no layer needed to stay in float"
        say(f"int8: wrote a full-integer file ({why}); its top-1 agrees with the Keras model on "
            f"{100 * result.agreement:.1f}% of {images} calibration images")
    return {"float_layers": result.float_layers, "calibration_agreement": result.agreement,
            "full_integer_calibration_agreement": result.full_integer_agreement}


def _require_extra(fmt: str) -> None:
    needed = {"onnx": ("onnx", "onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}
    for module in needed.get(fmt.split("-")[0], ()):
        try:
            __import__(module)
        except ImportError:
            raise TltoolError(f"--format {fmt} needs the {module} package: {EXTRA}") from None
