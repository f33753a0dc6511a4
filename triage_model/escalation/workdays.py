"""Working-day arithmetic for the L4 tier (5 working days): weekends and Chinese public holidays off.

Where a year's calendar comes from, in this order:

1. the policy's ``extra_workdays`` / ``extra_holidays`` (one-off corrections);
2. an ``official`` schedule in the policy (``calendar.schedules``), copied from the State Council notice;
3. ``chinese_calendar``, which carries the published schedules up to its last year (2026 in 1.11);
4. a ``provisional`` schedule in the policy: an estimate for a year whose notice was not yet available;
5. the fallback: Monday–Friday minus the fixed-date national holidays.

Statutory holidays move every year (lunar festivals) and come with 调休 make-up working days on
weekends, so 4 and 5 are guesses. ``year_status`` says which one a year gets; the clock records every
deadline that lands in a provisional or fallback year, logs it once per year and process, and the API
shows it in ``/readyz`` — so a missing schedule is noticed, not silently absorbed.

A working day counts as 24 working hours (the clock only runs on working days). So "5 working days
from Friday 15:00" ends next Friday 15:00, and a complaint received on a Saturday starts its clock on
Monday 00:00.
"""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import chinese_calendar
from chinese_calendar import constants as _cc_constants

from triage_model.escalation.policy import CalendarPolicy

DAY = timedelta(days=1)
MAX_DAYS_SCANNED = 3660  # ten years: a bound against a calendar misconfigured with no working days
PACKAGE_LAST_YEAR = max(d.year for d in _cc_constants.holidays)
"""The last year ``chinese_calendar`` has the State Council's schedule for."""

YearStatus = Literal["official", "provisional", "fallback"]
log = logging.getLogger("triage_model.escalation")


class WorkdayCalendar:
    def __init__(self, policy: CalendarPolicy, tz: str = "Asia/Shanghai") -> None:
        self.tz = ZoneInfo(tz)
        self.fixed = frozenset(policy.fallback_fixed_holidays)
        self.extra_holidays = frozenset(policy.extra_holidays)
        self.extra_workdays = frozenset(policy.extra_workdays)
        self.schedules = {
            year: (sched.status, frozenset(sched.holidays), frozenset(sched.workdays), sched.source)
            for year, sched in policy.schedules.items()
        }
        official = [y for y, (status, *_) in self.schedules.items() if status == "official"]
        self.official_through = max([PACKAGE_LAST_YEAR, *official])
        """Every year up to this one has an official schedule (the package's, or the policy's)."""
        self.known_through = max([self.official_through, *self.schedules])
        """The last year with any schedule, official or provisional; past it only the fallback applies."""
        self._uncertain: dict[int, YearStatus] = {}
        self._lock = threading.Lock()

    # -- which calendar a year gets ------------------------------------------------------------------

    def year_status(self, year: int) -> YearStatus:
        sched = self.schedules.get(year)
        if (sched is not None and sched[0] == "official") or year <= PACKAGE_LAST_YEAR:
            return "official"
        return "provisional" if sched is not None else "fallback"

    def is_workday(self, d: date) -> bool:
        if d in self.extra_workdays:
            return True
        if d in self.extra_holidays:
            return False
        sched = self.schedules.get(d.year)
        if sched is not None and sched[0] == "official":
            return self._by_schedule(d, sched)
        try:
            return bool(chinese_calendar.is_workday(d))
        except NotImplementedError:  # a year the package has no data for
            return self._by_schedule(d, sched) if sched is not None else self.fallback_is_workday(d)

    @staticmethod
    def _by_schedule(d: date, sched: tuple) -> bool:
        _, holidays, workdays, _ = sched
        if d in workdays:
            return True
        return d.weekday() < 5 and d not in holidays

    def fallback_is_workday(self, d: date) -> bool:
        """Used past every schedule: Mon–Fri, except the fixed-date national holidays."""
        return d.weekday() < 5 and d.strftime("%m-%d") not in self.fixed

    # -- warnings ----------------------------------------------------------------------------------

    def note_span(self, start: datetime, end: datetime) -> None:
        """Record (and log once per year) a deadline computation over years without an official schedule."""
        first, last = start.astimezone(self.tz).year, end.astimezone(self.tz).year
        for year in range(first, last + 1):
            status = self.year_status(year)
            if status == "official":
                continue
            with self._lock:
                seen = year in self._uncertain
                self._uncertain[year] = status
            if not seen:
                log.warning(self.describe(year, status))

    def describe(self, year: int, status: YearStatus) -> str:
        if status == "provisional":
            return (
                f"working-day deadline in {year}: counted with a PROVISIONAL {year} holiday schedule (estimated, not the "
                f"State Council notice; official data ends {self.official_through}). Replace it in the escalation policy."
            )
        return (
            f"working-day deadline in {year}: past the last year with any holiday schedule ({self.known_through}); "
            "counted as Monday-Friday minus fixed-date holidays only. Add the year's schedule to the escalation policy."
        )

    def status(self, today: date | None = None, horizon_days: int = 60) -> dict[str, object]:
        """For /readyz: which years are covered, and warnings for deadlines computed (or soon computed)
        in years without an official schedule."""
        today = today or datetime.now(self.tz).date()
        with self._lock:
            uncertain = dict(sorted(self._uncertain.items()))
        warnings = [self.describe(y, s) for y, s in uncertain.items()]
        soon = (today + timedelta(days=horizon_days)).year
        if soon > self.official_through and not uncertain:
            status = self.year_status(soon)
            warnings.append(
                f"deadlines within {horizon_days} days reach {soon}, which has "
                + ("only a provisional holiday schedule" if status == "provisional" else "no holiday schedule")
                + f" (official data ends {self.official_through})"
            )
        return {
            "official_through": self.official_through,
            "known_through": self.known_through,
            "provisional_years": sorted(y for y, (st, *_) in self.schedules.items() if st == "provisional"),
            "deadlines_in_uncertain_years": {str(y): s for y, s in uncertain.items()},
            "warnings": warnings,
        }

    # -- arithmetic --------------------------------------------------------------------------------

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
