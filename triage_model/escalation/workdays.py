"""Working-day arithmetic for the L4 tier (5 working days): weekends and Chinese public holidays off.

Why ``chinese_calendar``: statutory holidays move every year (lunar festivals) and come with 调休
make-up working days on weekends; the package carries the State Council's published schedule. For a
date outside its range it raises ``NotImplementedError``; then the policy's fallback applies
(weekends + fixed-date holidays + the configured extra holidays / workdays), so a deadline is always
computed, and the fallback is one reviewable list in the policy file.

A working day counts as 24 working hours (the clock only runs on working days). So "5 working days
from Friday 15:00" ends next Friday 15:00, and a complaint received on a Saturday starts its clock on
Monday 00:00.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

from triage_model.escalation.policy import CalendarPolicy

DAY = timedelta(days=1)
MAX_DAYS_SCANNED = 3660  # ten years: a bound against a calendar misconfigured with no working days


class WorkdayCalendar:
    def __init__(self, policy: CalendarPolicy, tz: str = "Asia/Shanghai") -> None:
        self.tz = ZoneInfo(tz)
        self.fixed = frozenset(policy.fallback_fixed_holidays)
        self.extra_holidays = frozenset(policy.extra_holidays)
        self.extra_workdays = frozenset(policy.extra_workdays)

    def is_workday(self, d: date) -> bool:
        if d in self.extra_workdays:
            return True
        if d in self.extra_holidays:
            return False
        try:
            return bool(chinese_calendar.is_workday(d))
        except NotImplementedError:  # a year the package has no data for
            return self.fallback_is_workday(d)

    def fallback_is_workday(self, d: date) -> bool:
        """Used outside chinese_calendar's years: Mon–Fri, except the fixed-date national holidays."""
        return d.weekday() < 5 and d.strftime("%m-%d") not in self.fixed

    def _day_start(self, d: date) -> datetime:
        return datetime.combine(d, time(0), tzinfo=self.tz)

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Time between two aware instants that falls on working days (in the policy's time zone)."""
        if end <= start:
            return timedelta(0)
        start, end = start.astimezone(self.tz), end.astimezone(self.tz)
        total = timedelta(0)
        d = start.date()
        for _ in range(MAX_DAYS_SCANNED):
            day_s, day_e = self._day_start(d), self._day_start(d + DAY)
            if day_s >= end:
                break
            if self.is_workday(d):
                total += min(end, day_e) - max(start, day_s)
            d += DAY
        return total

    def add_working_days(self, start: datetime, days: float) -> datetime:
        """The instant when ``days`` × 24 h of working time have passed since ``start``; returned in
        ``start``'s own time zone."""
        remaining = timedelta(days=days)
        local = start.astimezone(self.tz)
        d, cursor = local.date(), local
        for _ in range(MAX_DAYS_SCANNED):
            day_e = self._day_start(d + DAY)
            if self.is_workday(d):
                available = day_e - cursor
                if remaining <= available:
                    return (cursor + remaining).astimezone(start.tzinfo)
                remaining -= available
            d += DAY
            cursor = self._day_start(d)
        raise ValueError(f"no working days within {MAX_DAYS_SCANNED} days of {start.isoformat()}: check the calendar policy")
