"""The served text-trigger decisions on labeled rows: the lexicon's states fused with the head's scores.

Training fits the fusion points with these decisions, evaluation and the QA report measure them; both
call this one implementation of ``triage_model.trigger_fusion.fuse`` over arrays, so what is fitted,
measured and served is the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from triage_model.labeled_data import LabeledRow, trigger_targets
from triage_model.metrics import binary_prf
from triage_model.schema import TEXT_TRIGGERS
from triage_model.trigger_fusion import fuse, support_level


def lexicon_states(texts: Sequence[str]) -> np.ndarray:
    """``[n, 3]`` lexicon states ("clean" / "blocked" / "none") of the packaged policy per text trigger."""
    from triage_model.escalation import default_scorer

    detector = default_scorer().detector
    found = [detector.detect_states(text) for text in texts]
    return np.array([[f[name].state for name in TEXT_TRIGGERS] for f in found], dtype=object).reshape(len(texts), len(TEXT_TRIGGERS))


def fused_column(p: np.ndarray, states: np.ndarray, thresholds: dict[str, float] | None) -> np.ndarray:
    """One trigger's served decisions (``trigger_fusion.fuse``); ``thresholds`` None = the lexicon alone."""
    support = [support_level(float(x), thresholds) if thresholds is not None else None for x in p]
    return np.array([fuse(state, sup) for state, sup in zip(states, support, strict=True)], dtype=bool)


def fused_predictions(probs: np.ndarray, states: np.ndarray, thresholds: dict[str, dict[str, float]] | None) -> np.ndarray:
    """``[n, 3]`` booleans: the decision ``triage_model.trigger_fusion.fuse`` makes for each text trigger."""
    columns = [fused_column(probs[:, j], states[:, j], (thresholds or {}).get(name)) for j, name in enumerate(TEXT_TRIGGERS)]
    return np.stack(columns, axis=1)


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
