"""Running exported ONNX and LiteRT files, behind the same interface as Keras models.

Both take tier (c) of the input contract: float32 (N, S, S, 3) pixels 0-255,
decoded and fitted to S x S as training did (an int8 file with uint8 input
takes the same values as uint8). `load` returns the model info the file
carries and a function from such a batch to probabilities.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tltool.errors import TltoolError


def load(path: str) -> tuple[dict, callable]:
    """(model info, forward) for a .onnx or .tflite file.

    Raises:
        TltoolError: the runtime is not installed, or the file carries no tltool model info.
    """
    return _onnx(path) if path.endswith(".onnx") else _litert(path)


def _onnx(path: str):
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise TltoolError(f"{path}: running ONNX files needs onnxruntime: pip install 'tltool[export]'") from None
    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if "tltool" not in meta:
        raise TltoolError(f"{path}: no tltool model info in its metadata; export it with `tltool export`")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(pixels):
        return session.run(None, {name: np.asarray(pixels, np.float32)})[0]

    return json.loads(meta["tltool"]), forward


def _litert(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise TltoolError(f"{path}: running LiteRT files needs ai-edge-litert: pip install 'tltool[export]'") from None
    sidecar = path + ".json"
    if not os.path.isfile(sidecar):
        raise TltoolError(f"{path}: no {os.path.basename(sidecar)} beside it; copy the sidecar that "
                          "`tltool export` wrote with the file")
    with open(sidecar, encoding="utf-8") as f:
        info = json.load(f)
    from tltool.console import native_output_hidden

    with native_output_hidden():  # "Created TensorFlow Lite XNNPACK delegate for CPU"
        interpreter = Interpreter(model_path=path)
    return info, litert_forward(interpreter)


def litert_forward(interpreter):
    """A function from a float32 (N, S, S, 3) batch to probabilities, through a LiteRT interpreter."""
    from tltool.console import native_output_hidden

    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    shape = [None]

    def forward(pixels):
        pixels = np.asarray(pixels, np.float32)
        if shape[0] != pixels.shape:
            interpreter.resize_tensor_input(source["index"], pixels.shape)
            with native_output_hidden():  # the XNNPACK line again, when the first allocation applies it
                interpreter.allocate_tensors()
            shape[0] = pixels.shape
        interpreter.set_tensor(source["index"], _quantize(pixels, source))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(target["index"]), target)

    return forward


def run_batches(forward, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    """`forward` over `pixels` in batches, the outputs joined."""
    return np.concatenate([np.asarray(forward(pixels[i:i + batch])) for i in range(0, len(pixels), batch)])


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero = detail["quantization"]
    limits = np.iinfo(detail["dtype"])
    return np.clip(np.round(values / scale + zero), limits.min, limits.max).astype(detail["dtype"])


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero = detail["quantization"]
    return (values.astype(np.float32) - zero) * scale
