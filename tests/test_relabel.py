"""``triage data relabel``: reviewed changes land only where the reviewer's label is still there, are logged,
never touch other lines, and a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import write_jsonl
from training.relabel import RELABEL_LOG, apply_relabels, read_changes
from triage_cli.main import app as cli_app
from triage_model.labeled_data import load_labeled, split_for_id


def _id_in(split: str, prefix: str) -> str:
    return next(f"{prefix}-{i:04d}" for i in range(10_000) if split_for_id(f"{prefix}-{i:04d}") == split)


def _row(row_id: str, text: str, **labels: object) -> dict:
    row = {
        "id": row_id,
        "text": text,
        "category": "售后服务",
        "severity": "二级",
        "sentiment": "中性",
        "triggers": [],
        "source": "authored",
    }
    return {**row, **labels}


def _data(tmp_path: Path) -> tuple[Path, str, str]:
    train_id, test_id = _id_in("train", "rl"), _id_in("test", "rl")
    write_jsonl(
        tmp_path / "complaints" / "a.jsonl",
        [
            _row(train_id, "退款今天到账了，比说好的晚了一个礼拜，下次别让人干等"),
            _row(test_id, "召回的热水器登记半个月还没排上更换", category="产品质量", severity="一级"),
        ],
    )
    # a line no parser accepts must survive the rewrite byte for byte
    with (tmp_path / "complaints" / "a.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("{broken line\n")
    return tmp_path, train_id, test_id


def test_a_reviewed_change_is_applied_logged_and_a_second_run_is_a_no_op(tmp_path):
    data_dir, train_id, _ = _data(tmp_path)
    changes_file = write_jsonl(
        tmp_path / "c.jsonl", [{"id": train_id, "head": "severity", "old": "二级", "new": "三级", "task": "t", "reason": "v6-3"}]
    )
    before = (data_dir / "complaints" / "a.jsonl").read_text(encoding="utf-8").splitlines()
    changes, bad = read_changes(changes_file)
    assert not bad
    first = apply_relabels(data_dir, changes)
    assert first.counts() == {"applied": 1, "already in the data": 0, "refused": 0}
    after = (data_dir / "complaints" / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(after[0])["severity"] == "三级"
    assert after[1:] == before[1:]  # the other row and the broken line, byte for byte
    log = [json.loads(x) for x in (data_dir / RELABEL_LOG).read_text(encoding="utf-8").splitlines()]
    assert log == [{"id": train_id, "head": "severity", "old": "二级", "new": "三级", "task": "t", "reason": "v6-3"}]
    second = apply_relabels(data_dir, changes)
    assert second.counts() == {"applied": 0, "already in the data": 1, "refused": 0}
    assert len((data_dir / RELABEL_LOG).read_text(encoding="utf-8").splitlines()) == 1


def test_stale_unknown_off_schema_and_test_split_changes_are_refused(tmp_path):
    data_dir, train_id, test_id = _data(tmp_path)
    rows = [
        {"id": train_id, "head": "category", "old": "物流配送", "new": "订单交易", "task": "t", "reason": "stale"},
        {"id": "no-such-row", "head": "severity", "old": "二级", "new": "三级", "task": "t", "reason": "unknown"},
        {"id": test_id, "head": "severity", "old": "一级", "new": "二级", "task": "t", "reason": "test split"},
        {"id": train_id, "head": "severity", "old": "二级", "new": "四级", "task": "t", "reason": "not a label"},
        {"id": train_id, "head": "severity", "reason": "missing fields"},
    ]
    changes, bad = read_changes(write_jsonl(tmp_path / "c.jsonl", rows))
    assert len(changes) == 3 and len(bad) == 2
    result = apply_relabels(data_dir, changes)
    assert result.counts()["applied"] == 0
    reasons = " | ".join(why for _, why in result.refused)
    assert "stale" in reasons and "no row" in reasons and "test split" in reasons
    assert not (data_dir / RELABEL_LOG).exists()
    assert apply_relabels(data_dir, changes[2:], allow_test_edits=True).counts()["applied"] == 1


def test_trigger_lists_are_compared_as_sets_and_the_cli_reports_refusals(tmp_path):
    data_dir, train_id, _ = _data(tmp_path)
    ok = {"id": train_id, "head": "triggers", "old": [], "new": ["legal_media_risk"], "task": "t", "reason": "weibo"}
    stale = {"id": train_id, "head": "sentiment", "old": "愤怒", "new": "不满", "task": "t", "reason": "stale"}
    runner = CliRunner()
    out = runner.invoke(cli_app, ["data", "relabel", str(write_jsonl(tmp_path / "c.jsonl", [ok, stale])), "--data-dir", str(data_dir)])
    assert out.exit_code == 1
    assert "applied: 1" in out.output and "stale" in out.output
    rows = {r.id: r for r in load_labeled(data_dir).rows}
    assert rows[train_id].triggers == ["legal_media_risk"]
    missing = runner.invoke(cli_app, ["data", "relabel", str(tmp_path / "none.jsonl"), "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no changes file" in missing.output
