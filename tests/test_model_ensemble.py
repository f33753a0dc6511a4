"""Averaging models: complementary mistakes cancel, the decision rule is the served one."""

from __future__ import annotations

import numpy as np

from eval.model_ensemble import CRITICAL, average, figures
from triage_model.schema import HEADS


def _one_hot_probs(pred: np.ndarray, k: int, confidence: float) -> np.ndarray:
    probs = np.full((len(pred), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_two_models_wrong_on_different_rows_average_to_better_than_either():
    """Each model is confidently right on its own 80 % of rows and mildly wrong elsewhere: the average follows
    the confident one, so it beats both members on every head."""
    rng = np.random.default_rng(0)
    n = 400
    gold = {h: rng.integers(0, len(labels), n) for h, labels in HEADS.items()}
    members = []
    for model in range(2):
        wrong = (np.arange(n) % 5) == model  # disjoint 20 % of rows per model
        probs = {}
        for h, labels in HEADS.items():
            k = len(labels)
            right = _one_hot_probs(gold[h], k, 0.9)
            mistaken = _one_hot_probs((gold[h] + 1) % k, k, 0.6)
            probs[h] = np.where(wrong[:, None], mistaken, right)
        members.append(probs)
    mean = average(members)
    for h in HEADS:
        np.testing.assert_allclose(mean[h].sum(axis=1), 1.0, atol=1e-9)
    alone = [figures(p, gold, None) for p in members]
    together = figures(mean, gold, None)
    for head in HEADS:
        key = f"{head}_macro_f1"
        assert together[key] > max(a[key] for a in alone) + 0.1, (head, together[key], [a[key] for a in alone])


def test_the_critical_threshold_overrides_the_argmax_as_served():
    """A 一级 row at 0.3 (argmax 二级) counts as found only when the threshold is ≤ 0.3."""
    k = len(HEADS["severity"])
    sev = np.zeros((2, k))
    sev[0, CRITICAL], sev[0, (CRITICAL + 1) % k] = 0.3, 0.7
    sev[1, (CRITICAL + 1) % k] = 1.0
    probs = {h: np.eye(len(labels))[[0, 0]] for h, labels in HEADS.items()} | {"severity": sev}
    gold = {h: np.array([0, 0]) for h in HEADS} | {"severity": np.array([CRITICAL, (CRITICAL + 1) % k])}
    assert figures(probs, gold, None)["critical_recall"] == 0.0
    assert figures(probs, gold, 0.3)["critical_recall"] == 1.0
    assert figures(probs, gold, 0.3)["severity_accuracy"] == 1.0
