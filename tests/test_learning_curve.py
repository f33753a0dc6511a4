"""The baseline's learning curve: nested shares, and more rows must not make the baseline worse by much."""

from __future__ import annotations

import pytest

from eval.learning_curve import learning_curve, nested_shares
from tests.conftest import LABELED
from triage_model.labeled_data import load_labeled
from triage_model.schema import HEADS


def test_shares_are_nested_prefixes_of_one_seeded_shuffle():
    rows = load_labeled(LABELED).split("train")[:200]
    shares = nested_shares(rows, [1.0, 0.25, 0.5], seed=3)
    assert list(shares) == [0.25, 0.5, 1.0]
    assert [len(s) for s in shares.values()] == [50, 100, 200]
    assert shares[0.5][:50] == shares[0.25] and shares[1.0][:100] == shares[0.5]
    assert {r.id for r in shares[1.0]} == {r.id for r in rows}
    assert nested_shares(rows, [0.5], seed=3)[0.5] == shares[0.5]
    with pytest.raises(ValueError, match="fractions"):
        nested_shares(rows, [0.0, 1.5])


def test_the_baseline_learns_more_from_more_rows():
    data = load_labeled(LABELED)
    curve = learning_curve(data.split("train")[:1600], data.split("dev")[:300], [0.1, 1.0])
    small, full = curve
    assert (small["train_rows"], full["train_rows"]) == (160, 1600)
    for head in HEADS:
        assert 0.0 <= small[head] <= 1.0
    assert full["category"] > small["category"] + 0.05, "ten times the rows must buy category points"
    assert full["category"] > 1.5 / len(HEADS["category"]), "well above chance on held-out rows"
