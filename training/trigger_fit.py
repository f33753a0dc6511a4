"""Fit the trigger head's three operating points (veto / rescue / alone) against the escalation lexicon.

The fit runs on the complaints dev split only. Not on ``escalation/escalation_dev.jsonl``: the lexicon was
tuned on that file until it scored it perfectly, so there it would look flawless and the fit would learn
nothing about where it fails (that file instead joins the *training* rows: its negated and hypothetical
traps teach the head). The escalation eval set and the complaints test split are never read here. See
``triage_model.trigger_fusion`` for the decision rule.

Why a grid with a margin: with 20–40 dev positives per trigger, a threshold that wins by one row is
noise. A fused rule replaces the lexicon alone only if it gains at least ``MIN_GAIN`` dev F1.
"""

from __future__ import annotations

import numpy as np

from triage_model.metrics import binary_prf
from triage_model.schema import TEXT_TRIGGERS
from triage_model.trigger_decisions import fused_column
from triage_model.trigger_fusion import LEXICON_ONLY, NEVER

VETO_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
RESCUE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, NEVER)
ALONE_GRID = (0.8, 0.9, 0.95, 0.98, NEVER)
MIN_GAIN = 0.01


def fit_trigger_thresholds(probs: np.ndarray, gold: np.ndarray, states: np.ndarray) -> dict[str, dict[str, float]]:
    """Per trigger, the (veto, rescue, alone) maximising dev F1, kept only if it beats the lexicon by ``MIN_GAIN``."""
    gold = np.asarray(gold) > 0.5
    fitted: dict[str, dict[str, float]] = {}
    for j, name in enumerate(TEXT_TRIGGERS):
        p, g, s = probs[:, j], gold[:, j], states[:, j]
        base = binary_prf(s == "clean", g)["f1"]
        best, best_f1 = dict(LEXICON_ONLY), base
        for veto in VETO_GRID:
            for rescue in RESCUE_GRID:
                for alone in ALONE_GRID:
                    if not veto <= rescue <= alone:
                        continue
                    candidate = {"veto": veto, "rescue": rescue, "alone": alone}
                    f1 = binary_prf(fused_column(p, s, candidate), g)["f1"]
                    if f1 > best_f1 + 1e-9 and f1 >= base + MIN_GAIN:
                        best, best_f1 = candidate, f1
        fitted[name] = best
    return fitted
