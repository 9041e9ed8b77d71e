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

from tltool.models.layers import EPSILON

BOUNDS = (0.05, 20.0)
MIN_GAIN = 1e-4  # in log loss: a temperature that gains less says nothing


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.maximum(np.asarray(probs, np.float64), EPSILON)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, EPSILON))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in BOUNDS that minimises the NLL of `labels` under `probs`; 1.0 when none does better.

    When the model makes no mistake on these images, the NLL keeps falling
    as T goes to 0 and says nothing about how sure the model should be on
    new images: then T is only allowed to soften (T >= 1), never to sharpen.
    """
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    lowest = 1.0 if (np.asarray(probs).argmax(axis=1) == labels).all() else BOUNDS[0]
    result = minimize_scalar(lambda log_t: negative_log_likelihood(apply_temperature(probs, math.exp(log_t)), labels),
                             bounds=(math.log(lowest), math.log(BOUNDS[1])), method="bounded",
                             options={"xatol": 1e-4})
    # A bounded search never evaluates the bound itself: T = 1 (no change) wins unless another temperature
    # lowers the loss by more than MIN_GAIN (uniform probabilities, for one, give every T the same loss).
    best = math.exp(result.x)
    return best if result.fun < negative_log_likelihood(apply_temperature(probs, 1.0), labels) - MIN_GAIN else 1.0
