"""The shipped int8 model agrees with the torch model it was exported from, on the fixed test split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import LABELED
from triage_model.labeled_data import load_labeled
from triage_model.metrics import head_metrics
from triage_model.model_dir import DEFAULT_MODEL_DIR, TORCH_REFERENCE_FILE
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TRIGGER_HEAD, label_to_id

REFERENCE = DEFAULT_MODEL_DIR / TORCH_REFERENCE_FILE
pytestmark = pytest.mark.slow  # scores the whole test split with the int8 model


@pytest.fixture(scope="module")
def parity():
    if not REFERENCE.exists():
        pytest.skip("the shipped model has no torch_reference.json")
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    rows = {r.id: r for r in load_labeled(LABELED).split("test")}
    keep = [i for i, rid in enumerate(reference["ids"]) if rid in rows]
    assert len(keep) >= 0.9 * len(reference["ids"]), "test split changed a lot since export: re-export the model"
    test_rows = [rows[reference["ids"][i]] for i in keep]
    predictor = TriagePredictor.from_pretrained(DEFAULT_MODEL_DIR)
    probs = predictor.encoder_proba([r.text for r in test_rows])  # the quantized graph alone, before any n-gram blend
    return reference, keep, test_rows, probs


CONFIDENT_MARGIN = 0.2
"""torch's top-1 minus top-2 probability above which int8 must not change the label."""


@pytest.mark.parametrize("head", list(HEADS))
def test_int8_argmax_agrees_with_torch(parity, head):
    """int8 activations move logits slightly, so a near-tie may flip: ≥ 97 %
    of all rows agree, and ≥ 99 % of the rows torch is sure about (top-2 gap ≥ 0.2); margins wide enough
    for both AVX2 and AVX-512-VNNI int8 kernels.

    Measured for the shipped model: category 99.7 %, severity 99.4 %, sentiment 98.5 % overall (the
    sentiment head has the most near-ties: 不满 vs 中性). fp32 ONNX matches torch to 1e-5 (test_training).
    """
    reference, keep, _, probs = parity
    torch_argmax = np.asarray(reference["argmax"][head])[keep]
    same = probs[head].argmax(1) == torch_argmax
    assert float(same.mean()) >= 0.97, f"{head}: int8 agrees with torch on {same.mean():.2%} of test rows"
    if "margin" in reference:
        sure = np.asarray(reference["margin"][head])[keep] >= CONFIDENT_MARGIN
        assert float(same[sure].mean()) >= 0.99, f"{head}: int8 agrees on {same[sure].mean():.2%} of {sure.sum()} confident rows"


@pytest.mark.parametrize("head", list(HEADS))
def test_int8_macro_f1_is_within_two_points_of_torch(parity, head):
    """A margin that holds on any x86-64 CPU: int8 kernels and their rounding differ between AVX2 and
    AVX-512-VNNI (severity measured -0.7 points on an AVX2 EPYC, +0.1 on AVX-512). The exact figures
    per CPU belong in the benchmarks and the model card, not in a pass/fail line."""
    reference, _, rows, probs = parity
    gold = [label_to_id(head, getattr(r, head)) for r in rows]
    int8_f1 = head_metrics(probs[head], gold, HEADS[head])["macro_f1"]
    assert int8_f1 >= reference["macro_f1"][head] - 0.02, f"{head}: int8 {int8_f1:.4f} vs torch {reference['macro_f1'][head]:.4f}"


def test_int8_trigger_head_agrees_with_torch(parity):
    """The trigger head's 0.5 decisions survive quantization (≥ 99 % of row × trigger cells)."""
    reference, keep, _, probs = parity
    if "trigger_fires" not in reference or TRIGGER_HEAD not in probs:
        pytest.skip("the shipped model has no trigger head")
    torch_fires = np.asarray(reference["trigger_fires"])[keep]
    agreement = float(((probs[TRIGGER_HEAD] >= 0.5) == (torch_fires > 0)).mean())
    assert agreement >= 0.99, f"trigger head: int8 agrees with torch on {agreement:.2%} of cells"
