"""Issue 14, item 13: SLA working days in 2027 and beyond.

``chinese_calendar`` 1.11 ends in 2026. The policy ships the 2027 schedule (provisional: the State
Council notice was not available, see its ``source``), deadlines across Spring Festival 2027 skip it,
and a deadline in a year without an official schedule is logged and shown in /readyz.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings
from triage_model.escalation import EscalationScorer, load_policy
from triage_model.escalation.policy import EscalationPolicy
from triage_model.escalation.workdays import PACKAGE_LAST_YEAR, WorkdayCalendar
from triage_model.results import LabelScore, SentimentScore, TriageResult

CST = timezone(timedelta(hours=8))
L4_TEXT = "我的银行卡被盗刷了五千块，再不处理我就报警并且去12315投诉！"


def critical() -> TriageResult:
    return TriageResult(
        category=LabelScore(label="支付与资金安全", score=0.95, runner_up="账户与隐私"),
        severity=LabelScore(label="一级", score=0.95, runner_up="二级"),
        sentiment=SentimentScore(label="愤怒", score=0.9, runner_up="不满", emotion_index=85.0),
        model_version="test",
    )


@pytest.fixture()
def scorer() -> EscalationScorer:
    return EscalationScorer(load_policy())  # a fresh calendar: its warnings start empty


def test_the_policy_ships_a_2027_schedule_marked_as_provisional_with_its_source():
    sched = load_policy().calendar.schedules[2027]
    assert sched.status == "provisional" and "PROVISIONAL" in sched.source and "国务院" in sched.source
    assert date(2027, 2, 5) in sched.holidays  # 除夕 is statutory since the 2024 revision
    assert PACKAGE_LAST_YEAR == 2026, "chinese_calendar moved on: check whether 2027 is official there and drop the estimate"


def test_an_l4_deadline_across_spring_festival_2027_skips_the_holiday(scorer):
    """Received Thursday 2027-02-04 10:00 (the day before 除夕): 14 h that day, then 2-05 … 2-14 off
    (8 days from 除夕 + the weekend), then Mon–Thu 2-15 … 2-18 and 10 h of Friday."""
    esc = scorer.score(critical(), L4_TEXT, {"received_at": datetime(2027, 2, 4, 10, 0, tzinfo=CST)})
    assert esc.tier == "L4"
    assert esc.tier_due == datetime(2027, 2, 19, 10, 0, tzinfo=CST)
    weekends_only = WorkdayCalendar(EscalationPolicy.model_validate({**load_policy().model_dump(), "calendar": {}}).calendar)
    assert weekends_only.add_working_days(datetime(2027, 2, 4, 10, 0, tzinfo=CST), 5) == datetime(2027, 2, 11, 10, 0, tzinfo=CST)


def test_2027_make_up_working_days_and_golden_week_count(scorer):
    cal = scorer.clock.calendar
    assert cal.is_workday(date(2027, 10, 9)) and not cal.is_workday(date(2027, 10, 6))  # 调休 Saturday; 国庆 Wednesday
    assert not cal.is_workday(date(2027, 5, 3)) and not cal.is_workday(date(2027, 4, 5))
    assert cal.is_workday(date(2027, 3, 10))
    assert cal.year_status(2026) == "official" and cal.year_status(2027) == "provisional" and cal.year_status(2028) == "fallback"


def test_an_official_schedule_in_the_policy_wins_over_the_package():
    raw = load_policy().model_dump()
    raw["calendar"]["schedules"] = {2026: {"status": "official", "source": "test", "holidays": [date(2026, 3, 10)], "workdays": []}}
    cal = WorkdayCalendar(EscalationPolicy.model_validate(raw).calendar)
    assert not cal.is_workday(date(2026, 3, 10)) and cal.is_workday(date(2026, 3, 11))
    assert cal.is_workday(date(2026, 2, 16)), "春节 2026 is not in this (test) list: the official schedule replaces the package's"


def test_a_schedule_with_dates_of_another_year_is_refused():
    raw = load_policy().model_dump()
    raw["calendar"]["schedules"][2027]["holidays"].append(date(2028, 1, 1))
    with pytest.raises(ValueError, match="another year"):
        EscalationPolicy.model_validate(raw)


def test_deadlines_past_the_last_known_year_are_logged_once_and_shown_in_readyz(scorer, caplog):
    with caplog.at_level(logging.WARNING, logger="triage_model.escalation"):
        for day in (1, 2, 3):
            scorer.score(critical(), L4_TEXT, {"received_at": datetime(2028, 3, day, 9, 0, tzinfo=CST)})
    notes = [r.getMessage() for r in caplog.records if "2028" in r.getMessage()]
    assert len(notes) == 1 and "past the last year with any holiday schedule (2027)" in notes[0]
    status = scorer.clock.calendar.status(today=date(2026, 12, 5))
    assert status["deadlines_in_uncertain_years"] == {"2028": "fallback"} and status["official_through"] == 2026
    assert any("2028" in w for w in status["warnings"])


def test_readyz_warns_about_the_provisional_year(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir))
    with TestClient(app) as c:
        body = c.post("/v1/triage", json={"text": L4_TEXT, "received_at": "2027-02-04T10:00:00+08:00"}).json()
        assert body["escalation"]["tier"] == "L4" and body["escalation"]["tier_due"] == "2027-02-19T10:00:00+08:00"
        ready = c.get("/readyz").json()
    assert ready["status"] == "ready" and ready["calendar"]["provisional_years"] == [2027]
    assert ready["calendar"]["deadlines_in_uncertain_years"] == {"2027": "provisional"}
    assert any("PROVISIONAL 2027" in w for w in ready["warnings"])
