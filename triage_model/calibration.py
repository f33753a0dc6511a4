"""Temperature scaling per head, fitted on the dev split, so scores read as probabilities.

In the torch-free core because both training (the encoder's logits) and `triage blend` (the blended
probabilities, whose log is treated as logits) fit temperatures the same way.
"""

from __future__ import annotations

import numpy as np

from triage_model.decision import softmax


def nll(logits: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    probs = softmax(logits, temperature)
    return float(-np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """The temperature minimising dev NLL: a coarse log-spaced grid, then a fine one around the best.

    A grid (not gradient descent) because NLL in T is one-dimensional and the grid cannot diverge on
    tiny or perfectly separated dev sets.
    """
    gold = np.asarray(gold, dtype=int)
    if len(gold) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=lambda t: nll(logits, gold, t))
    fine = np.linspace(best * 0.9, best * 1.1, 41)
    return float(min(fine, key=lambda t: nll(logits, gold, t)))
