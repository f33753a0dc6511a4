"""``EscalationScorer(policy).score(result, text, context)``: triggers → tier → deadlines.

Text triggers come from the policy lexicon, fused with the model's trigger-head scores when the
result carries them (``TriageResult.text_triggers``; see ``triage_model.trigger_fusion``).

Pure and small, like a scikit-learn estimator: configuration in ``__init__`` (the policy), no state
between calls, no server needed, safe to share across threads. The service, ``triage predict`` and the
evaluation all call this one method, so the tier a reviewer measures is the tier customers get.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from triage_model.escalation.models import EscalationContext
from triage_model.escalation.policy import EscalationPolicy, load_policy
from triage_model.escalation.sla import TierClock, grade_deadlines
from triage_model.escalation.tiers import decide_tier
from triage_model.escalation.triggers import TextTriggerDetector, build_fired, context_triggers, text_evidence
from triage_model.results import EscalationResult, FieldEvidence, TextEvidence, TriageResult
from triage_model.schema import ALL_TRIGGERS, HEADS, TIER_NAMES
from triage_model.trigger_fusion import fuse

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
"""A Han character: a text without any is outside what the model was trained to read."""


class EscalationScorer:
    """Decide the handling tier of one triaged complaint under an escalation policy."""

    def __init__(self, policy: EscalationPolicy | None = None) -> None:
        self.policy = policy or load_policy()
        self.tz = ZoneInfo(self.policy.timezone)
        self.detector = TextTriggerDetector(self.policy)
        self.clock = TierClock(self.policy)

    def warmup(self) -> None:
        """Load jieba and its user dictionary now (≈1–2 s) instead of on the first scored text."""
        self.detector.prepare("预热：叫你们经理来").tokens_around(0)

    def _aware(self, dt: datetime | None) -> datetime | None:
        """Naive datetimes (CSV/JSONL rows) are read in the policy's time zone."""
        if dt is None or dt.tzinfo is not None:
            return dt
        return dt.replace(tzinfo=self.tz)

    def score(self, result: TriageResult, text: str, context: object | None = None, *, now: datetime | None = None) -> EscalationResult:
        """Score one complaint.

        ``result`` is the predictor's output for ``text``; ``context`` is an ``EscalationContext``, a
        mapping or any object with its field names (or None); ``now`` stands in for the serving time
        when the context has no ``received_at`` (default: the current UTC time).
        """
        ctx = EscalationContext.coerce(context)
        received_at = self._aware(ctx.received_at or now) or datetime.now(UTC)
        ctx = ctx.model_copy(update={"tier_entered_at": self._aware(ctx.tier_entered_at)})

        evidence: dict[str, TextEvidence | FieldEvidence] = {}
        scores: dict[str, float] = {}
        signals = result.text_triggers or {}
        for name, found in self.detector.detect_states(text).items():
            signal = signals.get(name)
            if not fuse(found.state, signal.support if signal else None):
                continue
            cand = found.evidence
            if cand is not None:
                evidence[name] = text_evidence(cand)
            else:  # the trigger head alone, above its "certain" point
                evidence[name] = FieldEvidence(
                    field=f"text_triggers.{name}", value=round(signal.score, 4), detail="trigger head score, no lexicon match"
                )
            if signal is not None:
                scores[name] = round(signal.score, 4)
        for name, ev in context_triggers(result, ctx, received_at, self.policy, self.clock).items():
            evidence.setdefault(name, ev)  # a text span is the more useful evidence for an agent
        fired = [
            build_fired(name, self.policy.weights[name], evidence[name], scores.get(name)) for name in ALL_TRIGGERS if name in evidence
        ]

        tier = decide_tier([t.name for t in fired], ctx.current_tier, self.policy.tier_rules)
        keep_clock = ctx.current_tier == tier and ctx.tier_entered_at is not None
        tier_start = ctx.tier_entered_at if keep_clock else received_at
        grade = grade_deadlines(result.severity.label, received_at)

        remaining = 1.0
        for t in fired:
            remaining *= 1.0 - t.weight
        threshold = self.policy.thresholds.needs_human_review_below
        reasons = [
            f"{head} score {getattr(result, head).score:.2f} < {threshold:g}" for head in HEADS if getattr(result, head).score < threshold
        ]
        if not _HAN.search(text):
            reasons.append("no Chinese characters: the model was trained on Chinese complaints, its labels are a guess here")
        return EscalationResult(
            tier=tier,
            tier_name=TIER_NAMES[tier],
            escalation_score=round(1.0 - remaining, 4),
            triggers=fired,
            needs_human_review=bool(reasons),
            review_reasons=reasons,
            received_at=received_at,
            first_response_due=grade.first_response_due,
            resolution_due=grade.resolution_due,
            tier_due=self.clock.due(tier, tier_start),
            policy_version=self.policy.version,
        )

    def score_into(self, result: TriageResult, text: str, context: object | None = None, *, now: datetime | None = None) -> TriageResult:
        """``result`` with its ``escalation`` filled in (a copy; the input is not changed)."""
        return result.model_copy(update={"escalation": self.score(result, text, context, now=now)})


_DEFAULT: EscalationScorer | None = None


def default_scorer() -> EscalationScorer:
    """The scorer for the packaged policy, built once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EscalationScorer(load_policy())
    return _DEFAULT
