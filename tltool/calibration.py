"""Temperature scaling: make a trained model's confidence match its accuracy.

A network fine-tuned with cross-entropy is often over-confident (or, with
label smoothing, under-confident). One number, a temperature T, fixes most of
it (Guo et al., 2017): probabilities become softmax(log(p) / T). T is fitted
on the validation split by minimising the negative log-likelihood; it never
changes which class is predicted, only how sure the model says it is.
"""

from __future__ import annotations

import math

import numpy as np

EPSILON = 1e-30  # probabilities are clipped here before the log, in the model and in numpy alike
BOUNDS = (0.05, 20.0)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.maximum(np.asarray(probs, np.float64), EPSILON)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, EPSILON))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in BOUNDS that minimises the NLL of `labels` under `probs`."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(apply_temperature(probs, math.exp(log_t)), labels),
                             bounds=tuple(math.log(b) for b in BOUNDS), method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))
