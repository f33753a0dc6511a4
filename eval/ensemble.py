"""An ensemble teacher: the exported model(s) averaged with the n-gram baseline, as distillation targets.

Why: the fine-tuned encoder and the character n-gram model make different mistakes (one reads meaning,
the other exact wording), so their averaged probabilities beat either alone on dev (measured on the v1
data: category 0.723 / 0.739 → 0.765 macro-F1, severity 0.819 / 0.807 → 0.856). Serving such an
ensemble would need scikit-learn at request time; instead a small student learns from its soft labels
(``triage distill --targets``) and serves alone.

Targets are stored as *log-probabilities* per head (the student reads them like logits: softmax of
them at temperature 1 gives back the ensemble's distribution) plus the teachers' trigger-head logits
(the n-gram baseline has no trigger head).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.baselines import NgramBaseline
from triage_model.decision import softmax
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TRIGGER_HEAD


def ensemble_targets(
    predictors: Sequence[TriagePredictor],
    texts: Sequence[str],
    baseline: NgramBaseline | None = None,
    baseline_weight: float = 0.4,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Per head ``log(mean probability)`` of the models (calibrated) mixed with the baseline at
    ``baseline_weight``; the trigger head's averaged logits."""
    probs = {h: np.zeros((len(texts), len(labels)), dtype=np.float64) for h, labels in HEADS.items()}
    triggers = None
    for predictor in predictors:
        logits = predictor.logits(list(texts), batch_size)
        for h in HEADS:
            probs[h] += softmax(logits[h], predictor.meta.temperatures.get(h, 1.0)) / len(predictors)
        if TRIGGER_HEAD in logits:
            triggers = (0 if triggers is None else triggers) + logits[TRIGGER_HEAD] / len(predictors)
    if baseline is not None:
        extra = baseline.predict_proba(texts)
        for h in HEADS:
            probs[h] = (1 - baseline_weight) * probs[h] + baseline_weight * extra[h]
    out = {h: np.log(np.clip(p, 1e-6, 1.0)).astype(np.float32) for h, p in probs.items()}
    if triggers is None:
        raise ValueError("no teacher has the trigger head")
    out[TRIGGER_HEAD] = triggers.astype(np.float32)
    return out
