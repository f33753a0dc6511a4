"""eval.long_texts: picks the rows the model reads only in part and reads them at other lengths."""

from __future__ import annotations

from pathlib import Path

from eval.long_texts import long_rows, metrics_at_lengths, read_in_part
from triage_model.labeled_data import LabeledRow
from triage_model.predictor import TriagePredictor

STUDENT = Path(__file__).resolve().parents[1] / "triage_model" / "student_model"


def _row(i: int, text: str) -> LabeledRow:
    return LabeledRow(id=f"long-{i}", text=text, category="产品质量", severity="一级", sentiment="不满", source="test")


def test_only_rows_over_the_limit_are_long_and_the_trained_length_is_restored() -> None:
    predictor = TriagePredictor.from_pretrained(STUDENT)
    trained = predictor.meta.max_length
    short = _row(0, "买的电水壶用了两天底座冒烟了，差点着火，孩子就在旁边。")
    long = _row(1, "我想把事情从头说清楚。" * 20 + "电水壶底座突然冒烟起火，孩子的手被烫伤了。" + "后面客服一直推脱。" * 20)
    assert read_in_part(predictor, [short.text, long.text], trained) == [False, True]
    assert [r.id for r in long_rows(predictor, [short, long], trained)] == ["long-1"]

    figures = metrics_at_lengths(predictor, [short, long], [trained, 2 * trained])
    assert set(figures) == {trained, 2 * trained}
    assert all(0.0 <= figures[n]["severity"]["accuracy"] <= 1.0 for n in figures)
    assert predictor.meta.max_length == trained
