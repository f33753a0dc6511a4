"""``triage predict`` round-trips files: every input row comes back, in order, with predictions."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from tests.conftest import write_jsonl
from triage_cli.main import app

runner = CliRunner()


def test_predict_round_trips_jsonl_and_passes_extra_fields(tmp_path, served_model_dir):
    rows = [
        {"id": "a1", "text": "快递一周没到，客服也不回", "channel": "app"},
        {"id": "a2", "text": "请问会员怎么退订？", "customer": {"tier": "gold"}},
        {"id": "a3", "text": "银行卡被盗刷两千元"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(served_model_dir), "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g["id"] for g in got] == ["a1", "a2", "a3"]
    assert got[0]["channel"] == "app" and got[1]["customer"] == {"tier": "gold"}
    for g in got:
        assert {"category", "severity", "sentiment", "model_version"} <= set(g)
        assert {"label", "score"} <= set(g["category"]) and "emotion_index" in g["sentiment"]


def test_bad_rows_are_reported_in_place_without_stopping(tmp_path, served_model_dir):
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": "ok1", "text": "退款没到账"}\n{not json\n{"id": "e1", "text": ""}\n{"id": "ok2", "text": "好评"}\n', encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(served_model_dir), "--input", str(src), "--output", str(out)])
    assert result.exit_code == 2
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g.get("id") for g in got] == ["ok1", None, "e1", "ok2"]
    assert "invalid JSON" in got[1]["error"] and got[1]["line"] == 2
    assert "empty" in got[2]["error"]
    assert "category" in got[3]


def test_predict_reads_and_writes_csv_with_bom(tmp_path, served_model_dir):
    src = tmp_path / "in.csv"
    src.write_text("id,text\nc1,手机充电发烫还冒烟\nc2,客服态度太差了\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", "--model", str(served_model_dir), "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert [r["id"] for r in rows] == ["c1", "c2"]
    assert rows[0]["category.label"] and rows[0]["sentiment.emotion_index"]


def test_every_command_has_help():
    for cmd in (["--help"], ["train", "--help"], ["export", "--help"], ["evaluate", "--help"], ["predict", "--help"], ["serve", "--help"]):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 0, cmd
