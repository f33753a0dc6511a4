"""The baseline at the model's own 一级 recall: the served model lowers its 一级 threshold for recall, so its
severity macro-F1 is compared with the baseline's at the same operating point as well as at argmax."""

from __future__ import annotations

import numpy as np
import pytest

from eval.baselines import matched_cell, severity_at_recall, side_by_side
from triage_model.metrics import head_metrics
from triage_model.schema import HEADS

# gold: four 一级 (0), three 二级 (1), three 三级 (2); two of the 一级 rows are only second-most-likely
GOLD = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
PROBS = np.array(
    [
        [0.80, 0.10, 0.10],
        [0.70, 0.20, 0.10],
        [0.30, 0.60, 0.10],
        [0.25, 0.15, 0.60],
        [0.28, 0.62, 0.10],
        [0.10, 0.80, 0.10],
        [0.10, 0.70, 0.20],
        [0.10, 0.10, 0.80],
        [0.05, 0.15, 0.80],
        [0.20, 0.20, 0.60],
    ]
)


def test_argmax_recall_is_half_and_matching_a_higher_recall_lowers_the_threshold() -> None:
    argmax = head_metrics(PROBS, GOLD, HEADS["severity"])
    assert argmax["per_class"]["一级"]["recall"] == pytest.approx(0.5)
    matched = severity_at_recall(PROBS, GOLD, 1.0)
    assert matched["recall"] == pytest.approx(1.0)
    assert matched["threshold"] == pytest.approx(0.25)
    assert matched["precision"] == pytest.approx(4 / 5), "the 二级 row at 0.28 is pulled into 一级 too"
    same = head_metrics(PROBS, GOLD, HEADS["severity"], {"一级": matched["threshold"]})
    assert matched["macro_f1"] == pytest.approx(same["macro_f1"])
    assert matched["accuracy"] == pytest.approx(0.9)


def test_a_recall_the_baseline_cannot_reach_is_reported_as_reached() -> None:
    hopeless = PROBS.copy()
    hopeless[3] = [0.01, 0.09, 0.90]
    matched = severity_at_recall(hopeless, GOLD, 1.0)
    assert matched["threshold"] == pytest.approx(0.05) and matched["recall"] < matched["target_recall"]


def test_side_by_side_carries_the_matched_figure_on_the_severity_row_only() -> None:
    heads = {h: {"macro_f1": 0.8} for h in HEADS}
    base = {h: {"macro_f1": 0.82} for h in HEADS}
    rows = side_by_side(heads, base, {"macro_f1": 0.75})
    by_head = {r["head"]: r for r in rows}
    assert by_head["severity"]["gap_points"] == pytest.approx(-2.0)
    assert by_head["severity"]["gap_points_at_model_recall"] == pytest.approx(5.0)
    assert matched_cell(by_head["severity"]) == "0.750 (+5.0)" and matched_cell(by_head["category"]) == "—"
    assert all("baseline_macro_f1_at_model_recall" not in r for r in side_by_side(heads, base))


def test_the_sweep_trades_precision_for_recall_as_the_threshold_falls() -> None:
    from eval.severity_sweep import sweep

    curve = sweep(PROBS, GOLD, (0.5, 0.25))
    assert curve[0]["recall"] == pytest.approx(0.5) and curve[1]["recall"] == pytest.approx(1.0)
    assert curve[1]["precision"] == pytest.approx(0.8)
    assert curve[1]["macro_f1"] == pytest.approx(severity_at_recall(PROBS, GOLD, 1.0)["macro_f1"])
