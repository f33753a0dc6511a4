"""Issue 14, item 6: the escalation lexicon scan is linear in the text length and capped.

Before: every lexicon candidate re-scanned its whole clause for every cue pattern, and number patterns
backtracked over digit runs, so 20,000 characters of "朋友说要报警" cost 3.5–12 s and a digit run 8 s.
Now cue matches are found once per (cue set, segment) and read by bisect — with exactly the matches
``finditer`` from the window start would give (checked here against the direct scan) — and texts over
the policy's ``max_scan_chars`` are read head + tail only.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from triage_model.escalation import load_policy
from triage_model.escalation.text import PreparedText
from triage_model.escalation.triggers import TextTriggerDetector


@pytest.fixture(scope="module")
def detector() -> TextTriggerDetector:
    det = TextTriggerDetector(load_policy())
    det.detect_states("预热：叫你们经理来")  # jieba, outside the timings
    return det


def best_time(detector: TextTriggerDetector, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        detector.detect_states(text)
        best = min(best, time.perf_counter() - start)
    return best


def repeat_to(unit: str, n: int) -> str:
    return (unit * (n // len(unit) + 1))[:n]


@pytest.mark.parametrize("unit", ["朋友说要报警", "1", "不用找经理", "我第三次打电话了，"])
def test_scan_time_grows_linearly_not_quadratically(detector, unit):
    small, large = best_time(detector, repeat_to(unit, 2_000)), best_time(detector, repeat_to(unit, 8_000))
    # 4× the text: linear ≈ 4×, quadratic ≈ 16× (it was 13–15× for the first two)
    assert large / max(small, 1e-4) < 8, f"{unit!r}: {small * 1000:.1f} ms → {large * 1000:.1f} ms"


@pytest.mark.parametrize("unit", ["朋友说要报警", "1"])
def test_the_texts_that_stalled_the_service_now_take_well_under_a_second(detector, unit):
    assert best_time(detector, repeat_to(unit, 20_000), repeats=1) < 1.0


def test_past_the_cap_the_time_stops_growing(detector):
    cap = load_policy().max_scan_chars
    at_cap, far = best_time(detector, repeat_to("朋友说要报警", cap)), best_time(detector, repeat_to("朋友说要报警", 100_000))
    assert far < 2.5 * at_cap + 0.02


def test_over_the_cap_head_and_tail_are_read_and_the_middle_is_not(detector):
    cap = load_policy().max_scan_chars
    filler = repeat_to("快递一直没有更新物流信息。", cap * 3)
    tail = detector.detect(filler + "再不处理我就去12315投诉")
    assert tail["legal_media_risk"].text == "12315" and tail["legal_media_risk"].start > cap
    head = detector.detect("我要找你们经理！" + filler)
    assert head["asks_superior"].start < 10
    middle = filler[: cap * 3 // 2] + "我要找你们经理！" + filler[cap * 3 // 2 :]
    assert "asks_superior" not in detector.detect(middle), "the blanked middle is not read"


def test_cue_matches_from_the_memo_equal_a_direct_scan_from_the_window(detector):
    """The memoised segment scan must give exactly what ``rx.finditer(norm, lo, end)`` gives for
    matches starting before ``hi`` — including when a segment match straddles ``lo``."""
    rng = random.Random(14)
    policy_patterns = [rx for _, pats, _, _ in detector.cues.values() for rx in pats]
    overlapping = [re.compile("ab|ba|aba"), re.compile("(?:之前|以前)?有人"), re.compile("朋友说|说要|友说要")]
    alphabet = list("abab之前以前有人不用说朋友说要没打算，")
    checked = straddled = 0
    for _ in range(300):
        norm = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        for rx in overlapping + rng.sample(policy_patterns, 10):
            found = list(rx.finditer(norm, 0, len(norm)))
            starts = [m.start() for m in found]
            doc = PreparedText(original=norm, norm=norm, clauses=[(0, len(norm))], sentences=[(0, len(norm))], agent_spans=[])
            for lo in range(len(norm)):
                straddled += any(m.start() < lo < m.end() for m in found)
                for hi in (lo + 1, lo + 5, len(norm)):
                    want = [(m.start(), m.end()) for m in rx.finditer(norm, lo, len(norm)) if m.start() < hi]
                    got = [(m.start(), m.end()) for m in detector._cue_matches(doc, rx, starts, found, lo, hi, len(norm))]
                    assert got == want, (rx.pattern, norm, lo, hi)
                    checked += 1
    assert checked > 10_000 and straddled > 50, "the straddling case must be exercised"


def test_a_cue_pattern_that_matches_nothing_is_refused_when_the_policy_loads():
    raw = load_policy().model_dump()
    raw["cues"]["negation"]["patterns"].append("(?:也许)?")
    from triage_model.escalation.policy import EscalationPolicy

    with pytest.raises(ValueError, match="matches the empty string"):
        TextTriggerDetector(EscalationPolicy.model_validate(raw))


def test_agent_turns_are_found_by_bisect(detector):
    text = "客服：您好，请问需要什么帮助？" * 500 + "客户：我要投诉，再不处理我就报警"
    assert detector.detect(text)["legal_media_risk"].text == "报警"
    assert "legal_media_risk" not in detector.detect("客户：你好 客服：有问题可以报警处理")
