"""Each shipped int8 model agrees with the torch model it was exported from, on the fixed test split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import LABELED
from triage_model.labeled_data import load_labeled
from triage_model.metrics import head_metrics
from triage_model.model_dir import BUNDLED_MODELS, ONNX_INT8_FILE, TORCH_REFERENCE_FILE
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TRIGGER_HEAD, label_to_id

pytestmark = pytest.mark.slow  # scores the whole test split with the int8 model


@pytest.fixture(scope="module", params=sorted(BUNDLED_MODELS), ids=lambda name: f"{name}_model")
def parity(request):
    """One bundled model (the default and the fast student) against its torch reference."""
    model_dir = BUNDLED_MODELS[request.param]
    reference_file = model_dir / TORCH_REFERENCE_FILE
    if not reference_file.exists():
        pytest.skip(f"{model_dir.name} has no {TORCH_REFERENCE_FILE}")
    reference = json.loads(reference_file.read_text(encoding="utf-8"))
    rows = {r.id: r for r in load_labeled(LABELED).split("test")}
    keep = [i for i, rid in enumerate(reference["ids"]) if rid in rows]
    assert len(keep) >= 0.9 * len(reference["ids"]), "test split changed a lot since export: re-export the model"
    test_rows = [rows[reference["ids"][i]] for i in keep]
    predictor = TriagePredictor.from_pretrained(model_dir)
    probs = predictor.encoder_proba([r.text for r in test_rows])  # the quantized graph alone, before any n-gram blend
    return reference, keep, test_rows, probs, _agreement_floors(model_dir)


CONFIDENT_MARGIN = 0.2
"""torch's top-1 minus top-2 probability above which int8 must not change the label."""
WEIGHT_ONLY_FLOORS = (0.97, 0.99)
ACTIVATION_INT8_FLOORS = (0.94, 0.975)
"""Argmax agreement floors (all rows, confident rows). Weight-only int8 (``MatMulNBits``, the 12-layer
default) keeps fp32 activations; static int8 (the student's ``QLinearMatMul``) also rounds every activation
to u8, so near-ties flip more often — measured on the bundled student: category 96.1 % / 98.8 %, severity
97.3 % / 99.3 %, sentiment 96.8 % / 99.1 %. Accuracy against the gold labels is held to the same 2 points
for both (next test): that is what the scheme was chosen by."""


def _agreement_floors(model_dir) -> tuple[float, float]:
    import onnx

    graph = onnx.load(str(model_dir / ONNX_INT8_FILE), load_external_data=False).graph
    return ACTIVATION_INT8_FLOORS if any(n.op_type == "QLinearMatMul" for n in graph.node) else WEIGHT_ONLY_FLOORS


@pytest.mark.parametrize("head", list(HEADS))
def test_int8_argmax_agrees_with_torch(parity, head):
    """int8 moves logits slightly, so a near-tie may flip: ≥ 97 % of all rows agree, and ≥ 99 % of the
    rows torch is sure about (top-2 gap ≥ 0.2) — 94 % / 97.5 % for activation-quantized (static) graphs;
    margins wide enough for both AVX2 and AVX-512-VNNI int8 kernels.

    Measured for the shipped model: category 99.7 %, severity 99.4 %, sentiment 98.5 % overall (the
    sentiment head has the most near-ties: 不满 vs 中性). fp32 ONNX matches torch to 1e-5 (test_training).
    """
    reference, keep, _, probs, (floor_all, floor_sure) = parity
    torch_argmax = np.asarray(reference["argmax"][head])[keep]
    same = probs[head].argmax(1) == torch_argmax
    assert float(same.mean()) >= floor_all, f"{head}: int8 agrees with torch on {same.mean():.2%} of test rows"
    if "margin" in reference:
        sure = np.asarray(reference["margin"][head])[keep] >= CONFIDENT_MARGIN
        assert float(same[sure].mean()) >= floor_sure, f"{head}: int8 agrees on {same[sure].mean():.2%} of {sure.sum()} confident rows"


@pytest.mark.parametrize("head", list(HEADS))
def test_int8_macro_f1_is_within_two_points_of_torch(parity, head):
    """A margin that holds on any x86-64 CPU: int8 kernels and their rounding differ between AVX2 and
    AVX-512-VNNI (severity measured -0.7 points on an AVX2 EPYC, +0.1 on AVX-512). The exact figures
    per CPU belong in the benchmarks and the model card, not in a pass/fail line."""
    reference, _, rows, probs, _ = parity
    gold = [label_to_id(head, getattr(r, head)) for r in rows]
    int8_f1 = head_metrics(probs[head], gold, HEADS[head])["macro_f1"]
    assert int8_f1 >= reference["macro_f1"][head] - 0.02, f"{head}: int8 {int8_f1:.4f} vs torch {reference['macro_f1'][head]:.4f}"


def test_int8_trigger_head_agrees_with_torch(parity):
    """The trigger head's 0.5 decisions survive quantization (≥ 99 % of row × trigger cells)."""
    reference, keep, _, probs, _ = parity
    if "trigger_fires" not in reference or TRIGGER_HEAD not in probs:
        pytest.skip("the shipped model has no trigger head")
    torch_fires = np.asarray(reference["trigger_fires"])[keep]
    agreement = float(((probs[TRIGGER_HEAD] >= 0.5) == (torch_fires > 0)).mean())
    assert agreement >= 0.99, f"trigger head: int8 agrees with torch on {agreement:.2%} of cells"
