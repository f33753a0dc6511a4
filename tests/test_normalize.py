from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from triage_model.normalize import normalize_text, truncate_head_tail


def test_full_width_becomes_half_width():
    assert normalize_text("ＡＢＣ１２３！") == "ABC123!"


def test_traditional_becomes_simplified():
    assert normalize_text("東西質量很差，退貨也不給辦理") == "东西质量很差,退货也不给办理"


def test_whitespace_is_collapsed_and_trimmed():
    assert normalize_text("  快递\n\n  没到\t了  ") == "快递 没到 了"


def test_control_and_zero_width_characters_are_removed():
    assert normalize_text("退\x00款\u200b没\x1b到\ufeff") == "退 款 没 到"


def test_lone_surrogates_do_not_crash():
    assert normalize_text("坏\ud800了") == "坏 了"


def test_head_tail_truncation_keeps_both_ends():
    text = "开头" + "中" * 100 + "结尾"
    cut, truncated = truncate_head_tail(text, 30)
    assert truncated and len(cut) == 30
    assert cut.startswith("开头") and cut.endswith("结尾")
    assert truncate_head_tail("短", 30) == ("短", False)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalise_never_crashes_and_is_idempotent(text):
    once = normalize_text(text)
    assert isinstance(once, str)
    assert normalize_text(once) == once


@settings(max_examples=10, deadline=None)
@given(st.text(min_size=1, max_size=50))
def test_normalise_handles_100k_character_text(chunk):
    text = (chunk * (100_000 // len(chunk) + 1))[:100_000]
    out = normalize_text(text)
    assert normalize_text(out) == out
