"""Diagnosis tools: κ against a blind second labeling, and confident learning's list of doubtful labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import LABELED, write_jsonl
from triage_model.labeled_data import LabeledRow
from triage_model.schema import HEADS


def row(i: int, category: str, severity: str = "二级", sentiment: str = "不满") -> dict:
    return {
        "id": f"r{i}",
        "text": f"第{i}条投诉内容",
        "category": category,
        "severity": severity,
        "sentiment": sentiment,
        "source": "authored",
    }


def test_kappa_is_one_for_identical_labels_and_counts_disagreements(tmp_path):
    pytest.importorskip("sklearn")
    from eval.agreement import agreement

    rows = [row(i, "物流配送" if i % 2 else "产品质量", "一级" if i % 3 else "三级") for i in range(40)]
    write_jsonl(tmp_path / "data" / "complaints" / "a.jsonl", rows)
    second = [{**r, "sentiment": "中性" if i < 10 else r["sentiment"]} for i, r in enumerate(rows)]
    write_jsonl(tmp_path / "second.jsonl", second)
    result = agreement(tmp_path / "data", tmp_path / "second.jsonl")
    assert result["n"] == 40
    assert result["heads"]["category"]["kappa"] == 1.0 and result["heads"]["severity"]["kappa"] == 1.0
    assert result["heads"]["sentiment"]["agreement"] == 0.75
    assert result["heads"]["sentiment"]["top_disagreements"] == [{"stored": "不满", "second": "中性", "count": 10}]


def test_confident_learning_flags_the_row_whose_label_its_neighbours_contradict():
    pytest.importorskip("cleanlab")
    from eval.label_noise import find_issues

    rows = [LabeledRow.model_validate(row(i, "物流配送" if i < 30 else "产品质量")) for i in range(60)]
    rows[5] = LabeledRow.model_validate(row(5, "产品质量"))  # a 物流配送 text mislabeled
    probs = {h: np.full((60, len(labels)), 0.01, dtype=np.float32) for h, labels in HEADS.items()}
    for i in range(60):
        probs["category"][i, HEADS["category"].index("物流配送" if i < 30 else "产品质量")] = 0.9
        probs["severity"][i, HEADS["severity"].index("二级")] = 0.98
        probs["sentiment"][i, HEADS["sentiment"].index("不满")] = 0.97
    flagged = [(it.id, it.head, it.given, it.suggested) for it in find_issues(rows, probs)]
    assert flagged == [("r5", "category", "产品质量", "物流配送")]


def test_the_shipped_blind_second_labeling_covers_its_sample():
    sample = [json.loads(x)["id"] for x in (LABELED / "agreement" / "blind_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    second = [json.loads(x)["id"] for x in (LABELED / "agreement" / "second_labels.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(sample) >= 300 and second == sample
