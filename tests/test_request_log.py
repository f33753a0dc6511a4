"""The opt-in request log: off by default, digest without text unless the operator opts in, bounded by
retention and size, and never the reason a triage request fails."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.app import create_app
from serving.request_log import RequestLog, RequestLogSettings, read_only_lookup, text_digest
from serving.settings import Settings
from tests.conftest import write_jsonl
from tests.test_corrections import correct, id_in, row, rows_by_id
from training.merge_corrections import merge_corrections
from triage_cli.main import app as cli_app
from triage_model.results import LabelScore, SentimentScore, TriageResult

TEXT = "我的银行卡昨晚被盗刷了2980元，不是我本人操作的！"
KNOWN = "快递一周了还没送到，电话也打不通"  # a labeled train row's text


def fake_result() -> TriageResult:
    return TriageResult(
        category=LabelScore(label="支付与资金安全", score=0.9, runner_up="账户与隐私"),
        severity=LabelScore(label="一级", score=0.9, runner_up="二级"),
        sentiment=SentimentScore(label="愤怒", score=0.5, runner_up="不满", emotion_index=70.0),
        model_version="test",
    )


@pytest.fixture
def env_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the TRIAGE_REQUEST_LOG_* settings at a temp file; returns a setter for the other variables."""
    path = tmp_path / "requests.sqlite3"
    monkeypatch.setenv("TRIAGE_REQUEST_LOG_PATH", str(path))

    def configure(**values: str) -> Path:
        for name, value in values.items():
            monkeypatch.setenv(f"TRIAGE_REQUEST_LOG_{name.upper()}", value)
        return path

    return configure


def client_for(model_dir: Path) -> TestClient:
    return TestClient(create_app(Settings(model_dir=model_dir, api_keys=[])))


def test_the_log_is_off_unless_enabled_and_then_writes_nothing(served_model_dir: Path, env_log) -> None:
    path = env_log()
    with client_for(served_model_dir) as client:
        assert client.post("/v1/triage", json={"text": TEXT}).status_code == 200
        assert client.app.state.request_log is None
    assert not path.exists()


def test_an_enabled_log_keeps_the_digest_and_the_answer_but_not_the_text(served_model_dir: Path, env_log) -> None:
    path = env_log(enabled="1")
    with client_for(served_model_dir) as client:
        body = client.post("/v1/triage", json={"text": TEXT}, headers={"X-Request-ID": "req-1"}).json()
        [row] = client.app.state.request_log.lookup("req-1")
    assert row["text"] is None and row["text_sha256"] == text_digest(TEXT)
    answer = (body["category"]["label"], body["severity"]["label"], body["escalation"]["tier"])
    assert (row["category"], row["severity"], row["tier"]) == answer
    assert TEXT.encode("utf-8") not in path.read_bytes() + Path(f"{path}-wal").read_bytes()


def test_text_is_stored_only_when_the_operator_enables_it_and_batch_items_keep_their_ids(served_model_dir: Path, env_log) -> None:
    env_log(enabled="true", store_text="true")
    items = [{"id": "T-1", "text": TEXT}, {"id": "T-2", "text": "快递一周没到"}]
    with client_for(served_model_dir) as client:
        assert client.post("/v1/triage/batch", json={"items": items}, headers={"X-Request-ID": "req-b"}).status_code == 200
        rows = client.app.state.request_log.lookup("req-b")
    assert [(r["item"], r["item_id"], r["text"]) for r in rows] == [(0, "T-1", TEXT), (1, "T-2", "快递一周没到")]


def test_a_failing_log_never_fails_the_request(served_model_dir: Path, env_log, monkeypatch: pytest.MonkeyPatch) -> None:
    env_log(enabled="1")

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    with client_for(served_model_dir) as client:
        assert client.post("/v1/triage", json={"text": TEXT}).status_code == 200  # opens the log
        monkeypatch.setattr(client.app.state.request_log, "append", broken)
        assert client.post("/v1/triage", json={"text": TEXT}).status_code == 200
        assert client.app.state.request_log.errors == 1


def test_rows_past_retention_are_deleted(tmp_path: Path) -> None:
    rlog = RequestLog(RequestLogSettings(enabled=True, path=tmp_path / "r.sqlite3", retention_days=1))
    day = 86_400.0
    rlog.append("old", [TEXT], [fake_result()], now=1_000 * day)
    rlog.append("new", [TEXT], [fake_result()], now=1_001.5 * day)  # prunes (first prune of this process)
    assert rlog.lookup("old") == [] and len(rlog.lookup("new")) == 1


def test_the_size_cap_deletes_the_oldest_rows_first_and_the_file_stays_near_it(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    rlog = RequestLog(RequestLogSettings(enabled=True, path=path, store_text=True, max_mb=0.25))
    long_text = TEXT * 40  # ~1 KB of UTF-8 per row
    for i in range(2_000):  # ~2 MB offered to a 0.25 MB log
        rlog.append(f"r{i}", [long_text], [fake_result()], now=1_000.0 + i)
        if i % 100 == 99:
            rlog.prune(now=1_000.0 + i)
    assert rlog.lookup("r0") == [] and len(rlog.lookup("r1999")) == 1
    assert rlog._live_bytes() <= 0.25 * 1024 * 1024
    rlog.close()
    assert path.stat().st_size < 0.6 * 1024 * 1024  # freed pages went back (incremental vacuum)


# ---------------------------------------------------------------- merge-corrections through the log


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    rows = [row(id_in("train", "tr"), KNOWN), row(id_in("test", "te"), "请问怎么修改收货地址？", category="咨询建议", sentiment="中性")]
    write_jsonl(tmp_path / "labeled_data" / "complaints" / "authored.jsonl", rows)
    return tmp_path / "labeled_data"


def logged(tmp_path: Path, request_id: str, texts: list[str], store_text: bool = False) -> Path:
    path = tmp_path / "requests.sqlite3"
    rlog = RequestLog(RequestLogSettings(enabled=True, path=path, store_text=store_text))
    rlog.append(request_id, texts, [fake_result() for _ in texts])
    rlog.close()
    return path


def test_a_request_id_only_correction_relabels_the_row_found_by_the_logged_digest(data_dir: Path, tmp_path: Path) -> None:
    path = logged(tmp_path, "req-7", ["\u3000快遞一週了還沒送到，電話也打不通 "])  # the same complaint, before normalisation
    cid = correct(data_dir, request_id="req-7", severity="二级")
    assert merge_corrections(data_dir).without_text == 1, "without the log: counted, never merged (as before)"
    result = merge_corrections(data_dir, request_lookup=read_only_lookup(path))
    assert result.updated == {id_in("train", "tr"): [cid]} and result.resolved_by_request == 1
    assert rows_by_id(data_dir)[id_in("train", "tr")]["severity"] == "二级"
    again = merge_corrections(data_dir, request_lookup=read_only_lookup(path))
    assert (again.updated, again.already_merged, again.resolved_by_request) == ({}, 1, 0)


def test_a_stored_text_lets_a_request_id_only_correction_add_a_new_row(data_dir: Path, tmp_path: Path) -> None:
    path = logged(tmp_path, "req-8", [TEXT], store_text=True)
    cid = correct(data_dir, request_id="req-8", category="支付与资金安全", severity="一级", sentiment="愤怒")
    result = merge_corrections(data_dir, request_lookup=read_only_lookup(path))
    assert result.added == {f"corr-{cid}": [cid]}
    assert rows_by_id(data_dir)[f"corr-{cid}"]["text"] == TEXT


def test_unresolvable_request_ids_are_reported_and_stay_pending(data_dir: Path, tmp_path: Path) -> None:
    path = logged(tmp_path, "req-batch", [KNOWN, "请问怎么修改收货地址？"])
    rlog = RequestLog(RequestLogSettings(enabled=True, path=path))
    rlog.append("req-new", [TEXT], [fake_result()])  # a new complaint, logged without its text
    rlog.close()
    ids = [correct(data_dir, request_id=r, severity="一级") for r in ("req-missing", "req-batch", "req-new")]
    result = merge_corrections(data_dir, request_lookup=read_only_lookup(path))
    assert not result.updated and not result.added
    issues = {i.correction_ids[0]: i.detail for i in result.issues if i.kind == "request_unresolved"}
    assert "not in the request log" in issues[ids[0]]
    assert "2 different texts" in issues[ids[1]]
    assert "TRIAGE_REQUEST_LOG_STORE_TEXT" in issues[ids[2]]


def test_merge_cli_reads_the_log_it_is_given_and_refuses_a_missing_one(data_dir: Path, tmp_path: Path) -> None:
    path = logged(tmp_path, "req-7", [KNOWN])
    correct(data_dir, request_id="req-7", severity="二级")
    args = ["data", "merge-corrections", "--data-dir", str(data_dir), "--report", str(tmp_path / "report.json")]
    missing = CliRunner().invoke(cli_app, [*args, "--request-log", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code == 1 and "no request log" in missing.output
    done = CliRunner().invoke(cli_app, [*args, "--request-log", str(path)])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["counts"]["resolved_by_request"] == 1


def test_feedback_naming_a_served_request_reaches_the_training_data(served_model_dir: Path, env_log, data_dir: Path) -> None:
    """The whole path: triage (logged, digest only) → POST /v1/feedback with only the request id → merge."""
    path = env_log(enabled="1")
    settings = Settings(model_dir=served_model_dir, api_keys=[], feedback_keys=["qa:fb-secret"], corrections_dir=data_dir / "corrections")
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/triage", json={"text": KNOWN}, headers={"X-Request-ID": "req-e2e"}).status_code == 200
        fb = client.post("/v1/feedback", json={"request_id": "req-e2e", "severity": "一级"}, headers={"X-API-Key": "fb-secret"})
        assert fb.status_code == 201, fb.text
    result = merge_corrections(data_dir, request_lookup=read_only_lookup(path))
    assert list(result.updated) == [id_in("train", "tr")]
    assert rows_by_id(data_dir)[id_in("train", "tr")]["severity"] == "一级"
