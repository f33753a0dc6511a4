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

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eval.escalation_eval import load_rows
from eval.metrics import binary_prf
from training.data import LabeledRow
from triage_model.schema import TEXT_TRIGGERS
from triage_model.trigger_fusion import LEXICON_ONLY, NEVER, fuse, support_level

VETO_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
RESCUE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, NEVER)
ALONE_GRID = (0.8, 0.9, 0.95, 0.98, NEVER)
MIN_GAIN = 0.01
STATE_CODES = {"none": 0, "blocked": 1, "clean": 2}


def escalation_rows(path: Path) -> list[LabeledRow]:
    """An escalation-set file as labeled rows whose ``triggers`` are the text-visible gold triggers.

    Rows whose gold may come from the ticket context (repeat_count, customer_requested_escalation) are
    left out: their text alone does not say whether a reader would mark the trigger.
    """
    path = Path(path)
    if not path.exists():
        return []
    return [
        LabeledRow(
            id=r.id,
            text=r.text,
            category=r.category,
            severity=r.severity,
            sentiment=r.sentiment,
            triggers=sorted(r.gold_triggers & set(TEXT_TRIGGERS)),
            source=f"escalation:{path.name}",
            split="train",
        )
        for r in load_rows(path)
        if r.context.get("repeat_count") is None and not r.context.get("customer_requested_escalation")
    ]


def lexicon_states(texts: Sequence[str]) -> np.ndarray:
    """``[n, 3]`` codes (0 none, 1 cue-blocked, 2 clean) of the packaged policy's lexicon per text trigger."""
    from triage_model.escalation import default_scorer

    detector = default_scorer().detector
    out = np.zeros((len(texts), len(TEXT_TRIGGERS)), dtype=int)
    for i, text in enumerate(texts):
        found = detector.detect_states(text)
        for j, name in enumerate(TEXT_TRIGGERS):
            out[i, j] = STATE_CODES[found[name].state]
    return out


def fused_predictions(probs: np.ndarray, states: np.ndarray, thresholds: dict[str, dict[str, float]] | None) -> np.ndarray:
    """``[n, 3]`` booleans: the decision ``triage_model.trigger_fusion.fuse`` makes for each text trigger."""
    names = {v: k for k, v in STATE_CODES.items()}
    out = np.zeros(states.shape, dtype=bool)
    for j, name in enumerate(TEXT_TRIGGERS):
        t = (thresholds or {}).get(name)
        for i in range(len(states)):
            support = support_level(float(probs[i, j]), t) if thresholds is not None else None
            out[i, j] = fuse(names[int(states[i, j])], support)
    return out


def _fused_vector(p: np.ndarray, state: np.ndarray, veto: float, rescue: float, alone: float) -> np.ndarray:
    return ((state == 2) & (p >= veto)) | ((state == 1) & (p >= rescue)) | ((state == 0) & (p >= alone))


def fit_trigger_thresholds(probs: np.ndarray, gold: np.ndarray, states: np.ndarray) -> dict[str, dict[str, float]]:
    """Per trigger, the (veto, rescue, alone) maximising dev F1, kept only if it beats the lexicon by ``MIN_GAIN``."""
    gold = np.asarray(gold) > 0.5
    fitted: dict[str, dict[str, float]] = {}
    for j, name in enumerate(TEXT_TRIGGERS):
        p, g, s = probs[:, j], gold[:, j], states[:, j]
        base = binary_prf(s == 2, g)["f1"]
        best, best_f1 = dict(LEXICON_ONLY), base
        for veto in VETO_GRID:
            for rescue in RESCUE_GRID:
                for alone in ALONE_GRID:
                    if not veto <= rescue <= alone:
                        continue
                    f1 = binary_prf(_fused_vector(p, s, veto, rescue, alone), g)["f1"]
                    if f1 > best_f1 + 1e-9 and f1 >= base + MIN_GAIN:
                        best, best_f1 = {"veto": veto, "rescue": rescue, "alone": alone}, f1
        fitted[name] = best
    return fitted


def fusion_report(probs: np.ndarray, gold: np.ndarray, states: np.ndarray, thresholds: dict[str, dict[str, float]]) -> dict:
    """Per trigger P/R/F1 of the lexicon alone, the head alone (0.5) and the fused rule."""
    gold = np.asarray(gold) > 0.5
    fused = fused_predictions(probs, states, thresholds)
    return {
        name: {
            "lexicon": binary_prf(states[:, j] == 2, gold[:, j]),
            "head": binary_prf(probs[:, j] >= 0.5, gold[:, j]),
            "fused": binary_prf(fused[:, j], gold[:, j]),
        }
        for j, name in enumerate(TEXT_TRIGGERS)
    }
