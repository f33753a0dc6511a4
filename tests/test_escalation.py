"""The escalation scorer: triggers with evidence, negation traps, context triggers, tier rules, deadlines."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from typing import get_args

import pytest

from eval.escalation_eval import DEFAULT_ESCALATION_SET, evaluate_escalation
from serving.schemas import EXAMPLE_REPEAT, EXAMPLE_REPEAT_RESPONSE, ComplaintContext, TriageResponse
from tests.conftest import REPO
from triage_model.escalation import EscalationContext, EscalationScorer, load_policy
from triage_model.escalation.policy import CalendarPolicy
from triage_model.escalation.tiers import decide_tier
from triage_model.escalation.triggers import parse_count
from triage_model.escalation.workdays import WorkdayCalendar
from triage_model.results import LabelScore, SentimentScore, TriageResult, TriggerName
from triage_model.schema import ALL_TRIGGERS

CST = timezone(timedelta(hours=8))
DEV_SET = REPO / "labeled_data" / "escalation" / "escalation_dev.jsonl"


@pytest.fixture(scope="module")
def scorer() -> EscalationScorer:
    return EscalationScorer(load_policy())


def heads(severity: str = "二级", sentiment: str = "不满", emotion: float = 50.0, score: float = 0.95) -> TriageResult:
    return TriageResult(
        category=LabelScore(label="售后服务", score=score),
        severity=LabelScore(label=severity, score=score),
        sentiment=SentimentScore(label=sentiment, score=score, emotion_index=emotion),
        model_version="test",
    )


def fired(scorer: EscalationScorer, text: str, context=None, **head_kw) -> dict[str, dict]:
    result = scorer.score(heads(**head_kw), text, context, now=datetime(2026, 3, 2, 10, tzinfo=CST))
    return {t.name: t.model_dump()["evidence"] for t in result.triggers}


# -- schema -------------------------------------------------------------------------------------------


def test_trigger_names_are_exactly_the_schema_triggers():
    assert get_args(TriggerName) == ALL_TRIGGERS
    assert set(load_policy().weights) == set(ALL_TRIGGERS)


def test_policy_file_is_versioned_and_holds_the_thresholds():
    policy = load_policy()
    assert policy.version
    assert policy.thresholds.high_emotion == 80
    assert policy.thresholds.sla_near_breach_fraction == 0.8
    assert {t: (lim.hours, lim.working_days) for t, lim in policy.tier_limits.items()} == {
        "L1": (24, None),
        "L2": (48, None),
        "L3": (72, None),
        "L4": (None, 5),
    }


def test_a_policy_naming_an_unknown_cue_set_is_refused(tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "triage_model" / "policy" / "escalation_policy.yaml").read_text(encoding="utf-8"))
    raw["triggers"]["asks_superior"]["blocked_by"].append("no_such_cues")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match="no_such_cues"):
        load_policy(bad)


# -- text triggers fire, with evidence into the original text -----------------------------------------


@pytest.mark.parametrize(
    ("text", "trigger", "evidence"),
    [
        ("你说了不算是吧？行，把你们主管叫来，我直接跟他说。", "asks_superior", "主管"),
        ("别念流程了，给我转上级，现在就转。", "asks_superior", "上级"),
        ("这事我要投诉到你们总部，麻烦把渠道发我。", "asks_superior", "总部"),
        ("麻烦帮我升级给能拍板的经理吧，金额太大你做不了主。", "asks_superior", "升级给"),
        ("这已经是我第三次打电话说这个问题了。", "repeated_contact", "第三次"),
        ("为了同一笔退款，前前后后联系了你们五次。", "repeated_contact", "联系了你们五次"),
        ("热线打了四遍，在线也留了两回言。", "repeated_contact", "打了四遍"),
        ("反复投诉好几次了，那个噪音问题一点没改善。", "repeated_contact", "反复"),
        ("这是第十二次联系你们了", "repeated_contact", "第十二次"),
        ("我已经在12315平台登记了，受理编号都发给我了。", "legal_media_risk", "12315平台"),
        ("明天中午之前不给说法，我就把视频发抖音。", "legal_media_risk", "发抖音"),
        ("律师函下周寄到你们公司。", "legal_media_risk", "律师函"),
        ("已经报警了，派出所那边做了笔录。", "legal_media_risk", "报警"),
        ("再不处理我就去12315投诉！", "legal_media_risk", "12315"),
    ],
)
def test_text_trigger_fires_with_its_evidence_span(scorer, text, trigger, evidence):
    ev = fired(scorer, text)[trigger]
    assert text[ev["start"] : ev["end"]] == ev["text"]
    assert evidence in ev["text"]


def test_evidence_indexes_the_original_traditional_and_full_width_text(scorer):
    text = "   這已經是我第４次打電話來問了，維修單還是沒人處理！"
    ev = fired(scorer, text)["repeated_contact"]
    assert text[ev["start"] : ev["end"]] == ev["text"] == "第４次"


@pytest.mark.parametrize(
    ("text", "trigger"),
    [
        ("不用找经理了，你把补发单号发我就行。", "asks_superior"),
        ("本来想找你们领导的，看你态度挺好，算了。", "asks_superior"),
        ("如果明天还没消息，我再考虑要不要找你们领导。", "asks_superior"),
        ("上次差点就投诉到总部了，这次希望别再这样。", "asks_superior"),
        ("你们经理昨天已经给我回过电话了，谢谢他。", "asks_superior"),
        ("再这样我就给差评，我要投诉！", "asks_superior"),
        ("麻烦让我的客户经理联系我一下。", "asks_superior"),
        ("客服：我帮您转给主管。客户：不用了，把退款办了就行。", "asks_superior"),
        ("这是我第二次反馈了，麻烦这次认真看一下。", "repeated_contact"),
        ("第二次联系你们了，年费还是没退。", "repeated_contact"),
        ("要是还让我打第三次电话，我真的会崩溃。", "repeated_contact"),
        ("你们这个月已经给我打了三次推销电话。", "repeated_contact"),
        ("三次找你们都是不同的事：上个月开发票，上周改地址，今天问退款。", "repeated_contact"),
        ("一个电话被转了四个部门。", "repeated_contact"),
        ("我不想闹到12315，咱们私下解决就好。", "legal_media_risk"),
        ("不至于找律师，就是希望把差价退给我。", "legal_media_risk"),
        ("朋友说可以报警，但我觉得没必要。", "legal_media_risk"),
        ("朋友让我找律师，我觉得没必要。", "legal_media_risk"),
        ("上次差点打12315，后来商家主动退了。", "legal_media_risk"),
        ("要不是看你们客服态度好，我早就起诉了。", "legal_media_risk"),
        ("看到小红书上有人曝光过你们家，想先确认下是不是真的。", "legal_media_risk"),
        ("以后有需要的话，也许会咨询一下律师吧，现在先等你们处理。", "legal_media_risk"),
        ("说实话我本来都想打12315了，后来想想算了，不至于。", "legal_media_risk"),
        ("家里的烟雾报警器一直误报。", "legal_media_risk"),
        ("订单号2023123150099，麻烦查一下退款进度。", "legal_media_risk"),
    ],
)
def test_negated_hypothetical_and_reported_mentions_do_not_fire(scorer, text, trigger):
    assert trigger not in fired(scorer, text)


def test_long_text_is_read_head_and_tail_with_offsets_into_the_original(scorer):
    text = "开头说快递丢了。" + "啊" * 60_000 + "结尾：叫你们经理出来！"
    ev = fired(scorer, text)["asks_superior"]
    assert ev["start"] > 60_000 and text[ev["start"] : ev["end"]] == ev["text"]


def test_explain_says_why_a_candidate_was_dropped(scorer):
    reasons = {c.blocked for c in scorer.detector.explain("不用找经理了")}
    assert any(r and r.startswith("negation") for r in reasons)


@pytest.mark.parametrize(
    ("token", "count"), [("3", 3), ("三", 3), ("十二", 12), ("二十", 20), ("两", 2), ("三四", 3), ("好几", 3), ("无数", 3)]
)
def test_chinese_numerals_are_counted(token, count):
    assert parse_count(token, vague=3) == count


def test_detection_is_thread_safe(scorer):
    texts = ["这已经是我第三次打电话了", "叫你们经理出来", "我不想闹到12315", "再不退款我就报警"] * 8
    expected = [sorted(scorer.detector.detect(t)) for t in texts]
    got: list[list[str] | None] = [None] * len(texts)

    def work(i: int) -> None:
        got[i] = sorted(EscalationScorer(load_policy()).detector.detect(texts[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


# -- head and context triggers --------------------------------------------------------------------------


def test_repeat_count_above_two_fires_repeated_contact_from_context(scorer):
    assert fired(scorer, "空调还是不制冷", {"repeat_count": 3})["repeated_contact"] == {
        "field": "context.repeat_count",
        "value": 3,
        "detail": "> 2",
    }
    assert "repeated_contact" not in fired(scorer, "空调还是不制冷", {"repeat_count": 2})


def test_customer_requested_escalation_fires_asks_superior(scorer):
    assert fired(scorer, "处理结果我不满意", {"customer_requested_escalation": True})["asks_superior"]["field"] == (
        "context.customer_requested_escalation"
    )


def test_high_emotion_is_emotion_index_at_least_80(scorer):
    assert "high_emotion" in fired(scorer, "垃圾", emotion=80.0)
    assert "high_emotion" not in fired(scorer, "垃圾", emotion=79.9)


def test_severity_critical_is_grade_one(scorer):
    assert fired(scorer, "卡被盗刷", severity="一级")["severity_critical"] == {"field": "severity.label", "value": "一级", "detail": None}
    assert "severity_critical" not in fired(scorer, "卡被盗刷", severity="二级")


@pytest.mark.parametrize(
    ("tier", "entered", "received", "fires"),
    [
        ("L1", datetime(2025, 5, 6, 9, tzinfo=CST), datetime(2025, 5, 7, 5, tzinfo=CST), True),  # 20 h of 24
        ("L1", datetime(2025, 5, 6, 9, tzinfo=CST), datetime(2025, 5, 7, 4, tzinfo=CST), False),  # 19 h
        ("L1", datetime(2025, 5, 6, 9, tzinfo=CST), datetime(2025, 5, 7, 4, 12, tzinfo=CST), False),  # exactly 80 %
        ("L2", datetime(2025, 5, 1, 10, tzinfo=CST), datetime(2025, 5, 3, 2, tzinfo=CST), True),  # 40 h of 48
        ("L2", datetime(2025, 5, 1, 10, tzinfo=CST), datetime(2025, 5, 2, 16, tzinfo=CST), False),  # 30 h
        ("L3", datetime(2025, 5, 1, 0, tzinfo=CST), datetime(2025, 5, 3, 12, tzinfo=CST), True),  # 60 h of 72
        ("L4", datetime(2025, 7, 21, 9, tzinfo=CST), datetime(2025, 7, 25, 13, tzinfo=CST), True),  # Mon→Fri: 4.17 wd
        ("L4", datetime(2025, 7, 24, 9, tzinfo=CST), datetime(2025, 7, 29, 13, tzinfo=CST), False),  # Thu→Tue: 3.17 wd
        ("L4", datetime(2026, 9, 28, 9, tzinfo=CST), datetime(2026, 10, 8, 9, tzinfo=CST), False),  # National Day: 3 wd
    ],
)
def test_sla_near_breach_is_more_than_80_percent_of_the_current_tier(scorer, tier, entered, received, fires):
    ctx = {"current_tier": tier, "tier_entered_at": entered, "received_at": received}
    assert ("sla_near_breach" in fired(scorer, "进度如何", ctx)) is fires


def test_text_saying_it_waited_long_is_not_sla_near_breach(scorer):
    assert "sla_near_breach" not in fired(scorer, "我都等了三天了！")


# -- tier rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("triggers", "current", "tier"),
    [
        ([], None, "L1"),  # T1
        (["severity_critical"], None, "L2"),  # T2
        (["repeated_contact", "high_emotion"], None, "L3"),  # T3
        (["asks_superior"], None, "L3"),  # T4
        (["legal_media_risk"], None, "L3"),  # T5: legal alone is not L4
        (["legal_media_risk", "severity_critical"], None, "L4"),  # T6
        (["legal_media_risk", "repeated_contact"], None, "L4"),  # T7
        (["legal_media_risk", "asks_superior"], None, "L4"),
        (["asks_superior", "severity_critical", "high_emotion"], None, "L3"),  # T8
        (["asks_superior", "repeated_contact", "severity_critical", "high_emotion"], None, "L4"),  # T9
        (["sla_near_breach"], "L2", "L3"),  # T10
        ([], "L3", "L3"),  # T11: never below current_tier
        (["severity_critical", "sla_near_breach"], "L4", "L4"),  # T12: L4 stays L4
        (["severity_critical", "sla_near_breach"], "L1", "L2"),  # T13
        (["repeated_contact"], None, "L2"),  # T14
        (["sla_near_breach", "asks_superior"], "L3", "L4"),
        (["high_emotion"], "L4", "L4"),
    ],
)
def test_tier_decision_follows_tier_policy(triggers, current, tier):
    assert decide_tier(triggers, current, load_policy().tier_rules) == tier


def test_scorer_never_goes_below_current_tier(scorer):
    result = scorer.score(heads(), "请问怎么开发票", {"current_tier": "L3"}, now=datetime(2026, 3, 2, tzinfo=CST))
    assert result.tier == "L3" and result.tier_name == "客户关系" and result.triggers == []


def test_escalation_score_is_noisy_or_of_the_weights(scorer):
    policy = load_policy()
    assert scorer.score(heads(), "请问怎么开发票").escalation_score == 0.0
    result = scorer.score(heads(severity="一级", emotion=95), "叫你们经理来")
    w = policy.weights
    expected = 1 - (1 - w["asks_superior"]) * (1 - w["severity_critical"]) * (1 - w["high_emotion"])
    assert result.escalation_score == pytest.approx(expected, abs=1e-4)


def test_low_head_confidence_needs_human_review(scorer):
    assert scorer.score(heads(score=0.95), "快递丢了").needs_human_review is False
    low = scorer.score(heads(score=0.41), "快递丢了")
    assert low.needs_human_review is True and any("0.41" in r for r in low.review_reasons)


# -- deadlines -----------------------------------------------------------------------------------------


def test_grade_sla_deadlines_run_from_received_at(scorer):
    received = datetime(2026, 3, 2, 10, tzinfo=CST)
    res = scorer.score(heads(severity="一级"), "卡被盗刷了", {"received_at": received})
    assert res.first_response_due == received + timedelta(hours=1)
    assert res.resolution_due == received + timedelta(hours=24)
    assert res.model_dump(mode="json")["first_response_due"] == "2026-03-02T11:00:00+08:00"


def test_received_at_defaults_to_now_in_utc(scorer):
    before = datetime.now(UTC)
    res = scorer.score(heads(), "快递丢了")
    assert before <= res.received_at <= datetime.now(UTC) and res.received_at.utcoffset() == timedelta(0)


def test_naive_context_datetimes_are_read_as_china_time(scorer):
    res = scorer.score(heads(), "快递丢了", {"received_at": "2026-03-02T10:00:00"})
    assert res.received_at.isoformat() == "2026-03-02T10:00:00+08:00"


def test_tier_due_keeps_the_clock_of_the_current_tier(scorer):
    entered = datetime(2026, 3, 2, 9, tzinfo=CST)
    res = scorer.score(heads(), "进度呢", {"current_tier": "L2", "tier_entered_at": entered, "received_at": entered + timedelta(hours=5)})
    assert res.tier == "L2" and res.tier_due == entered + timedelta(hours=48)
    moved = scorer.score(
        heads(), "叫你们经理来", {"current_tier": "L2", "tier_entered_at": entered, "received_at": entered + timedelta(hours=5)}
    )
    assert moved.tier == "L3" and moved.tier_due == entered + timedelta(hours=5 + 72)


def test_l4_deadline_skips_the_weekend(scorer):
    friday = datetime(2025, 7, 25, 15, tzinfo=CST)
    res = scorer.score(heads(severity="一级"), "律师函已经寄出", {"received_at": friday})
    assert res.tier == "L4"
    assert res.tier_due == datetime(2025, 8, 1, 15, tzinfo=CST)  # Fri + 5 working days = next Fri


def test_l4_deadline_skips_national_day_and_counts_the_make_up_saturday():
    cal = WorkdayCalendar(load_policy().calendar)
    start = datetime(2026, 9, 30, 10, tzinfo=CST)  # Wed; Oct 1–7 off; Sat Oct 10 is a 调休 working day
    assert cal.is_workday(date(2026, 10, 1)) is False and cal.is_workday(date(2026, 10, 10)) is True
    # Sep 30 14 h + Oct 8, 9, 10, 12 (96 h) = 110 h; 10 more h on Tue Oct 13
    assert cal.add_working_days(start, 5) == datetime(2026, 10, 13, 10, tzinfo=CST)


def test_deadline_in_utc_is_returned_in_utc_but_counted_on_china_days():
    cal = WorkdayCalendar(load_policy().calendar)
    start = datetime(2025, 7, 25, 7, tzinfo=UTC)  # Fri 15:00 in Shanghai
    due = cal.add_working_days(start, 5)
    assert due == datetime(2025, 8, 1, 7, tzinfo=UTC) and due.tzinfo == UTC


def test_years_outside_chinese_calendar_use_the_configured_fallback():
    cal = WorkdayCalendar(CalendarPolicy(fallback_fixed_holidays=["10-01", "10-02"], extra_holidays=[date(2031, 2, 3)], extra_workdays=[]))
    assert cal.is_workday(date(2031, 10, 1)) is False  # fixed-date holiday (a Wednesday)
    assert cal.is_workday(date(2031, 10, 4)) is False  # Saturday
    assert cal.is_workday(date(2031, 2, 3)) is False  # configured extra holiday (a Monday)
    assert cal.is_workday(date(2031, 10, 6)) is True
    # Tue 2031-09-30 09:00 + 5 working days: Sep 30 (15 h), Oct 3, 6, 7, 8 (96 h), 9 h on Oct 9
    assert cal.add_working_days(datetime(2031, 9, 30, 9, tzinfo=CST), 5) == datetime(2031, 10, 9, 9, tzinfo=CST)


# -- context plumbing ----------------------------------------------------------------------------------


def test_serving_context_converts_to_the_scorer_context():
    api = ComplaintContext(repeat_count=4, current_tier="L2", tier_entered_at="2026-11-27T09:00:00+08:00")
    ctx = EscalationContext.coerce(api)
    assert (ctx.repeat_count, ctx.current_tier, ctx.tier_entered_at.hour) == (4, "L2", 9)
    assert EscalationContext.coerce(None) == EscalationContext()
    assert EscalationContext.coerce({"repeat_count": "3", "current_tier": ""}).repeat_count == 3


def test_openapi_example_response_matches_what_the_scorer_says(scorer):
    example = TriageResponse.model_validate(EXAMPLE_REPEAT_RESPONSE)
    head_only = TriageResult.model_validate({k: v for k, v in EXAMPLE_REPEAT_RESPONSE.items() if k not in ("escalation", "request_id")})
    got = scorer.score(head_only, EXAMPLE_REPEAT["text"], ComplaintContext(**{k: v for k, v in EXAMPLE_REPEAT.items() if k != "text"}))
    assert got.model_dump(exclude={"policy_version"}) == example.escalation.model_dump(exclude={"policy_version"})


# -- measured on labeled sets (gold heads: the rules alone) --------------------------------------------


def test_dev_set_is_scored_exactly():
    """My own tuning set (never the gold set): every trigger and tier right."""
    m = evaluate_escalation(DEV_SET, modes=("gold_heads",))["gold_heads"]
    assert m["tier_accuracy"] == 1.0 and m["min_trigger_f1"] == 1.0


@pytest.mark.skipif(not (REPO / DEFAULT_ESCALATION_SET).exists(), reason="no gold escalation set")
def test_gold_set_in_gold_heads_mode_reaches_what_was_measured():
    """An honest floor, NOT the 0.90 target. The lexicon was built from GUIDELINE §5 and tuned only on
    escalation_dev.jsonl (the gold rows were never read). Measured on the gold set with gold heads:
    asks_superior F1 0.865, repeated_contact 0.891, legal_media_risk 0.869, the head/context triggers
    1.0, tier accuracy 0.899, false escalation to L3/L4 6.0 %. Text-trigger F1 ≥ 0.90 and false
    escalation ≤ 3 % are not reached; this guards the measured level against regressions."""
    m = evaluate_escalation(REPO / DEFAULT_ESCALATION_SET, modes=("gold_heads",))["gold_heads"]
    f1 = {k: v["f1"] for k, v in m["per_trigger"].items()}
    for name in ("high_emotion", "sla_near_breach", "severity_critical"):
        assert f1[name] == 1.0
    assert f1["asks_superior"] >= 0.85
    assert f1["repeated_contact"] >= 0.88
    assert f1["legal_media_risk"] >= 0.85
    assert m["tier_accuracy"] >= 0.89
    assert m["false_escalation_l3_l4"] <= 0.07


@pytest.mark.skipif(not (REPO / DEFAULT_ESCALATION_SET).exists(), reason="no gold escalation set")
def test_gold_set_with_the_shipped_trigger_head_reaches_what_was_measured(served_model_dir):
    """The shipped model's trigger head fused with the lexicon (operating points fitted on the complaints
    dev split; the gold rows were never trained, fitted or tuned on). Measured with gold heads:
    asks_superior F1 0.929, repeated_contact 0.904, legal_media_risk 0.906, tier accuracy 0.928, false
    escalation 3.7 % (target 3 %); with model heads: tier accuracy 0.890, false escalation 6.1 %."""
    from triage_model.predictor import TriagePredictor

    predictor = TriagePredictor.from_pretrained(served_model_dir)
    if not predictor.has_trigger_head:
        pytest.skip("the served model has no trigger head")
    m = evaluate_escalation(REPO / DEFAULT_ESCALATION_SET, predictor=predictor)
    # Floors ~3 points under what was measured: int8 kernels round differently on AVX2 and AVX-512-VNNI
    # (legal_media_risk measured 0.906 on one, 0.898 on the other). The 0.90 target is the evaluation
    # report's and the promote gate's business; this test guards behaviour: fusing never loses to the
    # lexicon alone, and the level does not collapse.
    for name in ("asks_superior", "repeated_contact", "legal_media_risk"):
        assert m["gold_heads"]["per_trigger"][name]["f1"] >= 0.87, name
        assert m["gold_heads"]["per_trigger"][name]["f1"] >= m["lexicon_gold_heads"]["per_trigger"][name]["f1"] - 0.01, name
    assert m["gold_heads"]["tier_accuracy"] >= 0.90
    assert m["gold_heads"]["false_escalation_l3_l4"] <= 0.06
    assert m["model_heads"]["false_escalation_l3_l4"] <= 0.09


def test_dev_rows_have_the_gold_schema():
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 60
    assert all({"text", "category", "severity", "sentiment", "context", "gold_triggers", "gold_tier", "trap"} <= set(r) for r in rows)


# -- wired into the API and `triage predict` -----------------------------------------------------------


@pytest.fixture(scope="module")
def client(served_model_dir):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    with TestClient(create_app(Settings(model_dir=served_model_dir))) as c:
        yield c


def test_api_response_carries_the_escalation_block(client):
    body = client.post("/v1/triage", json=EXAMPLE_REPEAT).json()
    esc = body["escalation"]
    names = {t["name"]: t for t in esc["triggers"]}
    assert {"repeated_contact", "sla_near_breach"} <= set(names)
    ev = names["repeated_contact"]["evidence"]
    assert EXAMPLE_REPEAT["text"][ev["start"] : ev["end"]] == ev["text"] == "第四次"
    assert esc["tier"] in ("L3", "L4") and esc["tier_name"]  # L2 + sla_near_breach → at least L3
    assert esc["received_at"] == "2026-11-29T07:30:00+08:00"
    assert esc["policy_version"] == load_policy().version
    assert 0 < esc["escalation_score"] < 1


def test_api_received_at_defaults_to_now_utc(client):
    esc = client.post("/v1/triage", json={"text": "快递一周没到"}).json()["escalation"]
    received = datetime.fromisoformat(esc["received_at"].replace("Z", "+00:00"))
    assert received.utcoffset() == timedelta(0) and abs((datetime.now(UTC) - received).total_seconds()) < 60


def test_every_batch_item_is_escalated_with_its_own_context(client):
    items = [{"text": "请问怎么开发票"}, {"text": "空调还是不制冷", "repeat_count": 5, "current_tier": "L3"}]
    results = client.post("/v1/triage/batch", json={"items": items}).json()["results"]
    assert [r["escalation"] is not None for r in results] == [True, True]
    assert results[1]["escalation"]["tier"] in ("L3", "L4")
    assert "repeated_contact" in {t["name"] for t in results[1]["escalation"]["triggers"]}


def test_openapi_documents_the_escalation_block(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "EscalationResult" in schemas and "tier_due" in schemas["EscalationResult"]["properties"]
    assert "escalation" in schemas["TriageResponse"]["properties"]
    assert "第四次" in json.dumps(schemas["TriageResponse"], ensure_ascii=False)


def test_predict_file_rows_get_escalation_from_their_context(tmp_path, served_model_dir):
    from triage_model.batch import predict_file

    src = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "text": "这已经是我第三次打电话了", "context": {"received_at": "2026-03-02T10:00:00+08:00"}},
        {"id": "b", "text": "快递丢了", "repeat_count": 3},
        {"id": "c", "text": "快递丢了", "current_tier": "L9"},
    ]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    stats = predict_file(src, out, served_model_dir)
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert stats == {"ok": 2, "errors": 1}
    assert got[0]["escalation"]["received_at"] == "2026-03-02T10:00:00+08:00"
    assert "repeated_contact" in {t["name"] for t in got[0]["escalation"]["triggers"]}
    assert got[1]["escalation"]["triggers"][0]["evidence"]["field"] == "context.repeat_count"
    assert "current_tier" in got[2]["error"]


def test_a_text_without_chinese_is_sent_to_human_review():
    from triage_model.escalation import default_scorer
    from triage_model.results import LabelScore, SentimentScore, TriageResult

    heads = TriageResult(
        category=LabelScore(label="物流配送", score=0.99),
        severity=LabelScore(label="三级", score=0.99),
        sentiment=SentimentScore(label="中性", score=0.99, emotion_index=20.0),
        model_version="test",
    )
    english = default_scorer().score(heads, "My parcel has not arrived for two weeks, please check.")
    chinese = default_scorer().score(heads, "快递两周没到，麻烦查一下。")
    assert english.needs_human_review and any("no Chinese characters" in r for r in english.review_reasons)
    assert not chinese.needs_human_review
