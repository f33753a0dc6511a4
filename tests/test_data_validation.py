"""Labeled-data loading and validation: corrupt rows are reported with file and line, never dropped."""

from __future__ import annotations

import json

import pytest

from tests.conftest import LABELED, write_jsonl
from training.validate import Minimums, validate, validate_dir
from triage_model.labeled_data import DataProblems, assign_splits, load_labeled, split_for_id


def row(i: int, text: str, **kw) -> dict:
    base = {
        "id": f"t-{i:04d}",
        "text": text,
        "category": "物流配送",
        "severity": "三级",
        "sentiment": "不满",
        "triggers": [],
        "source": "authored",
    }
    return {**base, **kw}


def test_the_shipped_labeled_data_passes_validation():
    report = validate_dir(LABELED, Minimums())
    assert report.ok, "\n".join(str(p) for p in report.problems[:20])


def test_corrupt_rows_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "complaints" / "a.jsonl"
    write_jsonl(path, [row(1, "快递三天没到，电话也打不通")])
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps(row(2, "包裹被扔在门口淋湿了", category="快递"), ensure_ascii=False) + "\n")
        fh.write(json.dumps(row(3, "   "), ensure_ascii=False) + "\n")
        fh.write(json.dumps(row(1, "重复的编号但内容不同的一条"), ensure_ascii=False) + "\n")
    data = load_labeled(tmp_path)
    found = {(p.line, p.message.split(":")[0]) for p in data.problems}
    assert [r.id for r in data.rows] == ["t-0001"]
    assert all(p.file == str(path) for p in data.problems)
    assert {line for line, _ in found} == {2, 3, 4, 5}
    assert any("invalid JSON" in p.message for p in data.problems)
    assert any("'快递' is not a category" in p.message for p in data.problems)
    assert any("duplicate id" in p.message for p in data.problems)


def test_jobs_refuse_data_with_bad_rows_and_name_the_file_and_line(tmp_path):
    from eval.evaluate import split_rows

    path = tmp_path / "complaints" / "a.jsonl"
    write_jsonl(path, [row(i, f"第{i}单快递三天没到，电话也打不通") for i in range(1, 4)])
    assert len(load_labeled(tmp_path).require_valid().rows) == 3
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    with pytest.raises(DataProblems, match=rf"1 data problems; run `triage data validate`. First:\n{path}:4: invalid JSON"):
        split_rows(tmp_path, "train")
    assert path.read_text(encoding="utf-8").count("\n") == 4, "the bad row is reported, never dropped from the file"


def test_an_unknown_channel_is_reported_and_a_missing_one_is_allowed(tmp_path):
    path = tmp_path / "complaints" / "a.jsonl"
    rows = [row(1, "快递三天没到，电话也打不通", channel="chat"), row(2, "包裹被扔在门口淋湿了")]
    rows.append(row(3, "客服说话很冲，问两句就挂电话", channel="微信"))
    write_jsonl(path, rows)
    data = load_labeled(tmp_path)
    assert [r.id for r in data.rows] == ["t-0001", "t-0002"]
    assert [p.line for p in data.problems] == [3] and "'微信' is not a channel" in data.problems[0].message


def test_near_duplicates_fail_validation(tmp_path):
    a = "我在平台买的扫地机器人用了三天就坏了，申请售后一直没人处理，太让人失望了"
    b = "我在平台买的扫地机器人用了三天就坏了，申请售后一直没人处理，太让人生气了"
    write_jsonl(tmp_path / "complaints" / "a.jsonl", [row(1, a), row(2, b), row(3, "外卖洒了一半，骑手还说不关他的事")])
    report = validate(load_labeled(tmp_path))
    assert not report.ok
    assert any("near-duplicate of 't-0001'" in p.message for p in report.problems)


def test_a_training_text_that_copies_an_escalation_eval_row_is_leakage(tmp_path):
    leaked = "这已经是我第三次打电话了，冰箱还是不制冷，叫你们经理来"
    write_jsonl(tmp_path / "complaints" / "a.jsonl", [row(1, "外卖洒了一半，骑手还说不关他的事"), row(2, leaked + "！")])
    eval_row = {"id": "esc-0001", "text": leaked, "gold_triggers": [], "gold_tier": "L1"}
    write_jsonl(tmp_path / "escalation" / "escalation_eval.jsonl", [eval_row])
    problems = validate_dir(tmp_path, minimums=None).problems
    assert [(p.line, "'esc-0001' (leakage)" in p.message) for p in problems] == [(2, True)]


def test_a_shared_opening_phrase_fails_validation(tmp_path):
    rows = [row(i, f"尊敬的客服您好，第{i}号问题：{'甲乙丙丁戊己庚辛壬癸'[i % 10]}{i * 7919}") for i in range(250)]
    write_jsonl(tmp_path / "complaints" / "a.jsonl", rows)
    report = validate(load_labeled(tmp_path))
    assert any("opening phrase '尊敬的客服'" in p.message for p in report.problems)


def test_minimum_counts_are_enforced(tmp_path):
    write_jsonl(tmp_path / "complaints" / "a.jsonl", [row(1, "快递三天没到，电话也打不通")])
    report = validate(load_labeled(tmp_path), Minimums())
    assert any("fewer than 3000" in p.message for p in report.problems)


def test_splits_come_from_the_id_and_are_stable():
    ids = [f"x-{i}" for i in range(4000)]
    splits = [split_for_id(i) for i in ids]
    assert splits == [split_for_id(i) for i in ids]
    share = {s: splits.count(s) / len(splits) for s in ("train", "dev", "test")}
    assert 0.17 < share["test"] < 0.23 and 0.08 < share["dev"] < 0.12


def test_assign_splits_keeps_unparsable_lines_byte_for_byte(tmp_path):
    path = tmp_path / "complaints" / "a.jsonl"
    write_jsonl(path, [row(1, "快递三天没到，电话也打不通")])
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{broken line kept\n")
    assert assign_splits(tmp_path) == 1
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["split"] == split_for_id("t-0001")
    assert lines[1] == "{broken line kept"
    assert assign_splits(tmp_path) == 0


def test_stored_split_that_disagrees_with_the_hash_is_flagged(tmp_path):
    wrong = {"train": "test", "dev": "test", "test": "train"}[split_for_id("t-0001")]
    write_jsonl(tmp_path / "complaints" / "a.jsonl", [row(1, "快递三天没到，电话也打不通", split=wrong)])
    report = validate(load_labeled(tmp_path))
    assert any("differs from the id hash split" in p.message for p in report.problems)
