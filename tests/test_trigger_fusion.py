"""The trigger head and the escalation lexicon combine as documented in triage_model.trigger_fusion."""

from __future__ import annotations

import numpy as np
import pytest

from eval.escalation_eval import GOLD_EMOTION
from training.trigger_fit import MIN_GAIN, fit_trigger_thresholds
from triage_model.escalation import EscalationScorer, load_policy
from triage_model.metrics import binary_prf
from triage_model.results import FieldEvidence, LabelScore, SentimentScore, TextEvidence, TriageResult
from triage_model.schema import TEXT_TRIGGERS
from triage_model.trigger_decisions import fused_predictions
from triage_model.trigger_fusion import LEXICON_ONLY, TriggerSignal, fuse, support_level

FITTED = {"veto": 0.1, "rescue": 0.8, "alone": 0.95}


@pytest.mark.parametrize(("score", "expected"), [(0.05, "against"), (0.1, "neutral"), (0.5, "neutral"), (0.8, "strong"), (0.97, "certain")])
def test_support_level_places_a_score_among_the_operating_points(score, expected):
    assert support_level(score, FITTED) == expected


def test_without_fitted_points_the_lexicon_decides_alone():
    for score in (0.0, 0.5, 1.0):
        support = support_level(score, None)
        assert fuse("clean", support) and not fuse("blocked", support) and not fuse("none", support)


@pytest.mark.parametrize(
    ("state", "support", "fires"),
    [
        ("clean", None, True),
        ("blocked", None, False),
        ("clean", "against", False),
        ("clean", "neutral", True),
        ("blocked", "neutral", False),
        ("blocked", "strong", True),
        ("none", "strong", False),
        ("none", "certain", True),
    ],
)
def test_fusion_truth_table(state, support, fires):
    assert fuse(state, support) is fires


def _fit_data(rng, n=400):
    """A lexicon with false fires the head sees through, and cue-blocked true ones the head recognises."""
    gold = rng.random((n, 3)) < 0.2
    states = np.where(gold, "clean", "none").astype(object)
    flip = rng.random((n, 3)) < 0.15
    states = np.where(flip & gold, "blocked", states)  # a cue wrongly blocked a real trigger
    states = np.where(flip & ~gold, "clean", states)  # the lexicon fired on a trap
    probs = np.clip(np.where(gold, 0.9, 0.03) + rng.normal(0, 0.03, (n, 3)), 0, 1)
    return probs, gold, states


def test_fit_learns_to_veto_and_rescue_when_the_head_is_informative():
    probs, gold, states = _fit_data(np.random.default_rng(0))
    fitted = fit_trigger_thresholds(probs, gold, states)
    lexicon_f1 = [_f1(states[:, j] == "clean", gold[:, j]) for j in range(3)]
    fused = fused_predictions(probs, states, fitted)
    for j, name in enumerate(TEXT_TRIGGERS):
        assert fitted[name] != LEXICON_ONLY
        assert _f1(fused[:, j], gold[:, j]) >= lexicon_f1[j] + MIN_GAIN


def test_fit_keeps_the_lexicon_when_the_head_is_noise():
    rng = np.random.default_rng(1)
    _, gold, _ = _fit_data(rng)
    states = np.where(gold, "clean", "none").astype(object)  # a perfect lexicon
    probs = rng.random(gold.shape)  # an uninformative head
    assert fit_trigger_thresholds(probs, gold, states) == dict.fromkeys(TEXT_TRIGGERS, LEXICON_ONLY)


def _f1(pred, gold) -> float:
    return binary_prf(pred, gold)["f1"]


# -- the scorer applies it -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    return EscalationScorer(load_policy())


def heads(**given: tuple[float, str]) -> TriageResult:
    signals = {name: given.get(name, (0.3, "neutral")) for name in TEXT_TRIGGERS}
    return TriageResult(
        category=LabelScore(label="售后服务", score=0.9),
        severity=LabelScore(label="二级", score=0.9),
        sentiment=SentimentScore(label="不满", score=0.9, emotion_index=GOLD_EMOTION["不满"]),
        model_version="test",
        text_triggers={name: TriggerSignal(score=score, support=support) for name, (score, support) in signals.items()},
    )


def fired(result) -> dict:
    return {t.name: t for t in result.triggers}


def test_a_clean_lexicon_match_fires_with_its_span_and_the_head_score(scorer):
    text = "别跟我扯流程了，叫你们经理来跟我说。"
    got = fired(scorer.score(heads(asks_superior=(0.7, "neutral")), text))
    ev = got["asks_superior"].evidence
    assert isinstance(ev, TextEvidence) and text[ev.start : ev.end] == ev.text and "经理" in ev.text
    assert got["asks_superior"].model_score == 0.7


def test_the_head_can_veto_a_lexicon_match(scorer):
    text = "别跟我扯流程了，叫你们经理来跟我说。"
    assert "asks_superior" not in fired(scorer.score(heads(asks_superior=(0.01, "against")), text))


def test_the_head_can_rescue_a_cue_blocked_match_and_keeps_its_span(scorer):
    """ "考虑" blocks the lexicon (a hypothetical cue); a confident head overrules it."""
    text = "我考虑去消协投诉你们。"
    assert scorer.detector.detect_states(text)["legal_media_risk"].state == "blocked"  # precondition of this case
    assert "legal_media_risk" not in fired(scorer.score(heads(legal_media_risk=(0.5, "neutral")), text))
    got = fired(scorer.score(heads(legal_media_risk=(0.9, "strong")), text))
    assert isinstance(got["legal_media_risk"].evidence, TextEvidence)


def test_the_head_alone_fires_only_when_certain_and_says_so(scorer):
    text = "同样的事我都不知道说过几遍了，每回都说等通知。"
    assert scorer.detector.detect_states(text)["repeated_contact"].state == "none"  # the lexicon sees nothing here
    assert "repeated_contact" not in fired(scorer.score(heads(repeated_contact=(0.7, "strong")), text))
    got = fired(scorer.score(heads(repeated_contact=(0.99, "certain")), text))
    ev = got["repeated_contact"].evidence
    assert isinstance(ev, FieldEvidence) and ev.field == "text_triggers.repeated_contact"
    assert got["repeated_contact"].source == "heads"


def test_a_blocked_match_is_not_rescued_by_a_neutral_score(scorer):
    text = "我不想闹到12315，咱们私下解决就好。"
    assert scorer.detector.detect_states(text)["legal_media_risk"].state == "blocked"
    assert "legal_media_risk" not in fired(scorer.score(heads(legal_media_risk=(0.6, "neutral")), text))
