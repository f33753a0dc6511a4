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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.escalation_eval import load_rows
from eval.metrics import binary_prf
from training.data import LabeledRow, trigger_targets
from triage_model.schema import TEXT_TRIGGERS
from triage_model.trigger_fusion import LEXICON_ONLY, NEVER, fuse, support_level

VETO_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
RESCUE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, NEVER)
ALONE_GRID = (0.8, 0.9, 0.95, 0.98, NEVER)
MIN_GAIN = 0.01


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
    """``[n, 3]`` lexicon states ("clean" / "blocked" / "none") of the packaged policy per text trigger."""
    from triage_model.escalation import default_scorer

    detector = default_scorer().detector
    found = [detector.detect_states(text) for text in texts]
    return np.array([[f[name].state for name in TEXT_TRIGGERS] for f in found], dtype=object).reshape(len(texts), len(TEXT_TRIGGERS))


def _fused_column(p: np.ndarray, states: np.ndarray, thresholds: dict[str, float] | None) -> np.ndarray:
    """One trigger's served decisions (``trigger_fusion.fuse``); ``thresholds`` None = the lexicon alone."""
    support = [support_level(float(x), thresholds) if thresholds is not None else None for x in p]
    return np.array([fuse(state, sup) for state, sup in zip(states, support, strict=True)], dtype=bool)


def fused_predictions(probs: np.ndarray, states: np.ndarray, thresholds: dict[str, dict[str, float]] | None) -> np.ndarray:
    """``[n, 3]`` booleans: the decision ``triage_model.trigger_fusion.fuse`` makes for each text trigger."""
    columns = [_fused_column(probs[:, j], states[:, j], (thresholds or {}).get(name)) for j, name in enumerate(TEXT_TRIGGERS)]
    return np.stack(columns, axis=1)


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
                    f1 = binary_prf(_fused_column(p, s, candidate), g)["f1"]
                    if f1 > best_f1 + 1e-9 and f1 >= base + MIN_GAIN:
                        best, best_f1 = candidate, f1
        fitted[name] = best
    return fitted


@dataclass(frozen=True)
class TriggerDecisions:
    """The served text-trigger decisions on labeled rows, beside the labels ([n, 3] each)."""

    probs: np.ndarray
    gold: np.ndarray
    states: np.ndarray
    fused: np.ndarray

    def report(self) -> dict:
        """Per trigger P/R/F1 of the lexicon alone, the head alone (0.5) and the fused rule."""
        return {
            name: {
                "lexicon": binary_prf(self.states[:, j] == "clean", self.gold[:, j]),
                "head": binary_prf(self.probs[:, j] >= 0.5, self.gold[:, j]),
                "fused": binary_prf(self.fused[:, j], self.gold[:, j]),
            }
            for j, name in enumerate(TEXT_TRIGGERS)
        }


def decide_rows(probs: np.ndarray, rows: Sequence[LabeledRow], thresholds: dict[str, dict[str, float]]) -> TriggerDecisions:
    """Run the lexicon on ``rows`` and fuse it with the head's ``probs`` under ``thresholds``."""
    gold = np.array([trigger_targets(r.triggers) for r in rows]).reshape(len(rows), len(TEXT_TRIGGERS)) > 0.5
    states = lexicon_states([r.text for r in rows])
    return TriggerDecisions(probs, gold, states, fused_predictions(probs, states, thresholds))
