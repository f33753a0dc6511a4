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


def run_predict(src, out, model) -> object:
    return runner.invoke(app, ["predict", "--model", str(model), "--input", str(src), "--output", str(out)])


def test_rows_without_id_or_with_a_repeated_id_get_an_error_in_place(tmp_path, served_model_dir):
    rows = [
        {"id": "x1", "text": "快递丢了"},
        {"text": "没有编号的投诉"},
        {"id": "x1", "text": "重复编号"},
        {"id": "x2", "text": "退款没到"},
    ]
    out = tmp_path / "out.jsonl"
    result = run_predict(write_jsonl(tmp_path / "in.jsonl", rows), out, served_model_dir)
    assert result.exit_code == 2, result.output
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert "category" in got[0] and "category" in got[3]
    assert "missing 'id'" in got[1]["error"] and "category" not in got[1]
    assert "duplicate id 'x1' (first at line 1)" in got[2]["error"]


def test_an_empty_file_or_a_header_only_csv_is_an_error_not_a_silent_success(tmp_path, served_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,text\n", encoding="utf-8")
    for src in (empty, header_only):
        result = run_predict(src, tmp_path / "out.jsonl", served_model_dir)
        assert result.exit_code == 1 and "no data rows" in result.output, result.output


def test_a_non_utf8_csv_line_is_reported_on_its_row_and_the_rest_is_scored(tmp_path, served_model_dir):
    src = tmp_path / "in.csv"
    src.write_bytes("id,text\nc1,快递没到\n".encode() + "c2,客服态度差\n".encode("gbk") + "c3,退款没到账\n".encode())
    out = tmp_path / "out.jsonl"
    result = run_predict(src, out, served_model_dir)
    assert result.exit_code == 2, result.output
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g.get("id") for g in got] == ["c1", None, "c3"]
    assert "in.csv line 3 is not UTF-8" in got[1]["error"] and got[1]["line"] == 3
    assert "category" in got[0] and "category" in got[2]


def test_an_unsupported_file_type_is_rejected_before_any_model_loads(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("快递没到\n", encoding="utf-8")
    result = run_predict(src, tmp_path / "out.jsonl", tmp_path / "no-such-model")
    assert result.exit_code == 1 and "unsupported file type '.txt'" in result.output, result.output


def test_version_names_the_package_and_the_shipped_model():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("triage-model ") and "shipped model" in result.output


def test_train_flags_override_any_config_field_and_unknown_ones_are_errors():
    from training.config import load_config, parse_overrides

    cfg = load_config(None, **parse_overrides(["--epochs", "7", "--encoder-lr=3e-5", "--freeze_embeddings", "false"]))
    assert (cfg.epochs, cfg.encoder_lr, cfg.freeze_embeddings) == (7, 3e-5, False)
    result = runner.invoke(app, ["train", "--no-such-knob", "1"])
    assert result.exit_code == 2 and "unknown training option --no-such-knob" in result.output
