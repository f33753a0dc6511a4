"""Escalation: which handling tier (L1–L4) a triaged complaint goes to, why, and by when.

Data flows one way: ``TriageResult`` (heads) + original text + ticket context → triggers (with
evidence) → tier (GUIDELINE §5.9) → deadlines. Everything tunable lives in the versioned policy file
``triage_model/policy/escalation_policy.yaml``.
"""

from triage_model.escalation.models import EscalationContext
from triage_model.escalation.policy import EscalationPolicy, load_policy
from triage_model.escalation.scorer import EscalationScorer, default_scorer

__all__ = ["EscalationContext", "EscalationPolicy", "EscalationScorer", "default_scorer", "load_policy"]
