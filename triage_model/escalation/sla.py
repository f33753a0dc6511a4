"""Deadlines: the grade's response/resolution SLA and the handling tier's resolution time.

Two clocks that must not be mixed (GUIDELINE §3 note): the **grade** SLA (一级 1 h / 24 h, 二级
2 h / 48 h, 三级 4 h / 72 h, from ``schema.GRADE_SLA``) runs from ``received_at``; the **tier** limit
(L1 24 h, L2 48 h, L3 72 h, L4 5 working days, from the policy) runs from when the complaint entered
its tier, and is what ``sla_near_breach`` measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from triage_model.escalation.policy import EscalationPolicy
from triage_model.escalation.workdays import WorkdayCalendar
from triage_model.schema import GRADE_SLA


@dataclass(frozen=True)
class GradeDeadlines:
    first_response_due: datetime
    resolution_due: datetime


def grade_deadlines(grade: str, received_at: datetime) -> GradeDeadlines:
    """First-response and resolution deadlines implied by a severity grade."""
    sla = GRADE_SLA[grade]
    return GradeDeadlines(received_at + sla.first_response, received_at + sla.resolution)


@dataclass(frozen=True)
class TierUsage:
    """How much of a tier's time has been used: in hours (L1–L3) or working days (L4)."""

    used: float
    limit: float
    unit: str

    @property
    def fraction(self) -> float:
        return self.used / self.limit


class TierClock:
    """Tier deadlines and elapsed-time fractions under one policy and working-day calendar."""

    def __init__(self, policy: EscalationPolicy) -> None:
        self.policy = policy
        self.calendar = WorkdayCalendar(policy.calendar, policy.timezone)

    def due(self, tier: str, start: datetime) -> datetime:
        """When a complaint that entered ``tier`` at ``start`` must be resolved."""
        limit = self.policy.tier_limits[tier]
        if limit.working_days is not None:
            due = self.calendar.add_working_days(start, limit.working_days)
            self.calendar.note_span(start, due)  # warns when the span leaves the years with an official calendar
            return due
        return start + timedelta(hours=limit.hours)

    def usage(self, tier: str, entered_at: datetime, now: datetime) -> TierUsage:
        """Elapsed time in ``tier`` between ``entered_at`` and ``now`` (negative spans count as 0)."""
        limit = self.policy.tier_limits[tier]
        if limit.working_days is not None:
            worked = self.calendar.working_time_between(entered_at, now)
            if now > entered_at:
                self.calendar.note_span(entered_at, now)
            return TierUsage(worked / timedelta(days=1), limit.working_days, "working days")
        elapsed = max(now - entered_at, timedelta(0))
        return TierUsage(elapsed / timedelta(hours=1), limit.hours, "hours")
