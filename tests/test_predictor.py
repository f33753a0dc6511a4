"""``TriagePredictor`` keeps scikit-learn's contract and says when it did not read the whole text."""

from __future__ import annotations

import numpy as np
import pytest

from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS


@pytest.fixture(scope="module")
def predictor(served_model_dir) -> TriagePredictor:
    return TriagePredictor.from_pretrained(served_model_dir)


def test_predict_proba_takes_the_same_raw_texts_as_predict(predictor):
    texts = ["我的銀行卡被盜刷了２９８０元！", "  请问会员怎么退订？ "]  # traditional + full-width: normalised inside
    probs = predictor.predict_proba(texts)
    results = predictor.predict(texts)
    for head in ("category", "severity", "sentiment"):
        assert probs[head].shape[0] == 2 and np.allclose(probs[head].sum(1), 1.0, atol=1e-4)
        for p, r in zip(probs[head], results, strict=True):
            chosen = getattr(r, head)
            assert float(p[HEADS[head].index(chosen.label)]) == pytest.approx(chosen.score, abs=1e-3)
    simplified = predictor.predict_proba(["我的银行卡被盗刷了2980元!"])
    assert np.allclose(probs["category"][0], simplified["category"][0], atol=1e-4)


def test_a_single_string_is_refused_rather_than_read_letter_by_letter(predictor):
    with pytest.raises(TypeError):
        predictor.predict_proba("快递没到")
    with pytest.raises(TypeError):
        predictor.predict("快递没到")


def test_truncated_is_set_when_the_model_reads_only_head_and_tail_tokens(predictor):
    short, long = predictor.predict(["快递三天没到", "我上周买的冰箱一直没有送到，" * 60])
    assert short.truncated is False
    assert long.truncated is True, "about 900 characters is far over 128 tokens: the middle was not read"
