"""The one predict-then-escalate step: raw texts (+ ticket context) → heads → escalation.

The API, ``triage predict`` and the escalation evaluation all call :func:`triage_texts` (the API with dynamic
batching: the heads from the batcher, then :func:`escalate`, the same second half), so the tier a reviewer
measures is exactly the tier a customer gets, computed by one piece of code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from triage_model.escalation import EscalationScorer
from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult


def triage_texts(
    predictor: TriagePredictor,
    scorer: EscalationScorer,
    texts: Sequence[str],
    contexts: Sequence[object | None] | None = None,
    *,
    now: datetime | None = None,
    batch_size: int = 32,
) -> list[TriageResult]:
    """Predict every head for ``texts`` and fill in each result's escalation from its own text and context.

    ``contexts[i]`` is an ``EscalationContext``, a mapping or an object with its field names (or None);
    ``now`` stands in for ``received_at`` where a context has none (one instant for the whole call).
    """
    return escalate(scorer, predictor.predict(list(texts), batch_size), texts, contexts, now=now)


def escalate(
    scorer: EscalationScorer,
    results: Sequence[TriageResult],
    texts: Sequence[str],
    contexts: Sequence[object | None] | None = None,
    *,
    now: datetime | None = None,
) -> list[TriageResult]:
    """The second half of :func:`triage_texts`: each head result with its escalation filled in from its
    own text and context (copies; ``results`` are not changed). For callers that got the heads some other
    way — the API's dynamic batcher runs many requests' texts through one ONNX run, then scores each
    request's results here."""
    contexts = contexts if contexts is not None else [None] * len(texts)
    return [scorer.score_into(res, text, ctx, now=now) for res, text, ctx in zip(results, texts, contexts, strict=True)]
