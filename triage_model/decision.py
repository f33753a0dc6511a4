"""From calibrated probabilities to labels: argmax, except where a safety-critical label has a
lower operating threshold.

Why: missing a 一级 complaint (safety, stolen money, data breach) costs far more than a false alarm,
so training picks, on the dev split, the threshold at which 一级 recall reaches its target; the
predictor and every metric then apply the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def decide(probs: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """Label ids for ``probs`` ``[n, k]``: argmax, overridden by any label whose probability reaches its threshold."""
    pred = probs.argmax(axis=-1)
    for label, threshold in (thresholds or {}).items():
        idx = list(labels).index(label)
        pred = np.where(probs[..., idx] >= threshold, idx, pred)
    return pred


def fit_recall_threshold(probs: np.ndarray, gold: np.ndarray, label_idx: int, target_recall: float) -> float:
    """Highest threshold whose dev recall for ``label_idx`` reaches ``target_recall`` (≤ 0.5, ≥ 0.05)."""
    positives = probs[gold == label_idx, label_idx]
    if len(positives) == 0:
        return 0.5
    for threshold in np.round(np.arange(0.5, 0.04, -0.01), 2):
        if (positives >= threshold).mean() >= target_recall:
            return float(threshold)
    return 0.05
