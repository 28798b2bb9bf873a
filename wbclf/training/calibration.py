"""Temperature scaling (``calibrate=true``): one softmax temperature fitted on val.

Dividing the logits by T > 0 never changes the argmax, so accuracy stays as it is; only the
confidence moves. The logits are recovered from the stored probabilities as their logarithm
(softmax is invariant to a constant shift), so the fit needs no second pass over the model.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

__all__ = ["apply_temperature", "fit_temperature"]

_EPS = 1e-12
_BOUNDS = (np.log(0.05), np.log(20.0))  # temperatures beyond these mean a broken model


def _logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after dividing the logits by ``temperature``."""
    return np.exp(log_softmax(_logits(probs) / temperature, axis=1))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The temperature that minimizes the negative log-likelihood of ``labels``."""
    logits = _logits(probs)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, labels].mean())

    found = minimize_scalar(nll, bounds=_BOUNDS, method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))
