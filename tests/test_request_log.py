"""The opt-in request log: off by default, digest without text unless the operator opts in, bounded by
retention and size, and never the reason a triage request fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.request_log import RequestLog, RequestLogSettings, text_digest
from serving.settings import Settings
from triage_model.results import LabelScore, SentimentScore, TriageResult

TEXT = "我的银行卡昨晚被盗刷了2980元，不是我本人操作的！"


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
    assert (row["category"], row["severity"], row["tier"]) == (body["category"]["label"], body["severity"]["label"], body["escalation"]["tier"])
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
