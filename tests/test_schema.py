from __future__ import annotations

import json

import pytest

from triage_model.model_dir import ModelLoadError, ModelMeta, read_meta, write_meta
from triage_model.schema import CATEGORIES, GRADE_SLA, HEADS, SENTIMENTS, SEVERITIES, label_to_id, schema_dict


def test_every_label_round_trips_through_its_id():
    for head, labels in HEADS.items():
        for i, label in enumerate(labels):
            assert label_to_id(head, label) == i
            assert HEADS[head][label_to_id(head, label)] == label


def test_unknown_label_error_names_the_allowed_labels():
    with pytest.raises(KeyError, match="物流配送"):
        label_to_id("category", "物流")


def test_schema_has_the_agreed_labels():
    assert len(CATEGORIES) == 10 and len(set(CATEGORIES)) == 10
    assert SEVERITIES == ("一级", "二级", "三级")
    assert SENTIMENTS == ("愤怒", "不满", "中性", "正面")
    assert [GRADE_SLA[g].first_response.total_seconds() / 3600 for g in SEVERITIES] == [1, 2, 4]
    assert [GRADE_SLA[g].resolution.total_seconds() / 3600 for g in SEVERITIES] == [24, 48, 72]


def _meta(schema: dict) -> ModelMeta:
    return ModelMeta(
        model_name="m", model_version="m-1", schema=schema, max_length=64, pad_id=1, temperatures={"category": 1.3}, data_hash="abc"
    )


def test_model_meta_round_trips_through_json(tmp_path):
    meta = _meta(schema_dict())
    write_meta(tmp_path, meta)
    assert json.loads((tmp_path / "triage_config.json").read_text(encoding="utf-8"))["schema"] == schema_dict()
    assert read_meta(tmp_path) == meta


def test_model_with_a_different_label_schema_is_refused(tmp_path):
    schema = schema_dict()
    schema["heads"]["category"] = [*schema["heads"]["category"][:-1], "其他"]
    write_meta(tmp_path, _meta(schema))
    with pytest.raises(ModelLoadError, match="schema"):
        read_meta(tmp_path)


def test_missing_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model directory"):
        read_meta(tmp_path)
