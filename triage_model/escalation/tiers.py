"""The tier decision (labeled_data/GUIDELINE.md §5.9), as one small pure function over the fired trigger names.

Rules (from the policy file, as GUIDELINE §5.9 quotes them): L1 by default; at least L2 if any of
{severity_critical, repeated_contact, high_emotion}; at least L3 if asks_superior or legal_media_risk
or two or more of that set; L4 if legal_media_risk with severity_critical / asks_superior /
repeated_contact, or four or more triggers; sla_near_breach puts it one tier above current_tier (L4
stays L4); take the highest; never below current_tier.
"""

from __future__ import annotations

from collections.abc import Collection

from triage_model.escalation.policy import TierRules
from triage_model.schema import TIERS


def _rank(tier: str) -> int:
    return TIERS.index(tier)


def decide_tier(fired: Collection[str], current_tier: str | None, rules: TierRules) -> str:
    """Highest tier any rule gives for ``fired``, never below ``current_tier``."""
    fired = set(fired)
    rank = _rank(rules.default)
    if fired & set(rules.at_least_L2_any):
        rank = max(rank, _rank("L2"))
    if fired & set(rules.at_least_L3_any) or len(fired & set(rules.at_least_L3_two_of)) >= 2:
        rank = max(rank, _rank("L3"))
    if any(set(pair) <= fired for pair in rules.L4_pairs) or len(fired) >= rules.L4_min_triggers:
        rank = max(rank, _rank("L4"))
    current = _rank(current_tier) if current_tier else None
    if current is not None and "sla_near_breach" in fired:
        rank = max(rank, min(current + rules.sla_near_breach_steps, len(TIERS) - 1))
    if current is not None:
        rank = max(rank, current)
    return TIERS[rank]
