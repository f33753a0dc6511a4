"""The paired bootstrap reads a real difference as one and no difference as none (synthetic predictions)."""

from __future__ import annotations

import numpy as np

from eval.paired_bootstrap import paired_bootstrap
from triage_model.schema import HEADS


def _gold_and_noisy(rows: int, error_rate: float, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gold = {h: rng.integers(0, len(labels), rows) for h, labels in HEADS.items()}
    pred = {}
    for h, labels in HEADS.items():
        wrong = rng.random(rows) < error_rate
        pred[h] = np.where(wrong, (gold[h] + 1) % len(labels), gold[h])
    return gold, pred


def test_identical_models_differ_by_nothing_and_a_better_one_is_read_as_better():
    gold, weak = _gold_and_noisy(1500, 0.30, seed=1)
    same = paired_bootstrap(gold, weak, weak, n=200)
    assert all(r["delta"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 for r in same.values())

    rng = np.random.default_rng(2)
    strong = {h: np.where(rng.random(len(g)) < 0.5, g, weak[h]) for h, g in gold.items()}  # fixes about half of weak's errors
    better = paired_bootstrap(gold, weak, strong, n=300)
    for key, r in better.items():
        assert r["delta"] > 0 and r["ci_low"] > 0, (key, r)
        assert r["ci_low"] <= r["delta"] <= r["ci_high"]
