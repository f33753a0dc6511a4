"""Issue 14, items 1–5 and 7: bad input gets a typed 4xx, never a 500, an empty reply or a stall.

In-process (TestClient); the on-the-wire checks (h11, chunked bodies, raw header bytes) are in
test_hardening_live.py.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from serving.app import clean_request_id, create_app
from serving.settings import Settings
from triage_model.escalation import EscalationContext, default_scorer
from triage_model.micro_batching import MicroBatcher
from triage_model.results import LabelScore, SentimentScore, TriageResult

FRAUD = "我的银行卡昨晚被盗刷了2980元，不是我本人操作的！再不处理我就报警并且去12315投诉！"


@pytest.fixture(scope="module")
def client(served_model_dir):
    settings = Settings(model_dir=served_model_dir, api_keys=["triage-key"], admin_keys=["admin:admin-key"])
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = "triage-key"
        yield c


def raw_post(client: TestClient, path: str, body: bytes, content_type: str | None = "application/json", **headers: str):
    if content_type is not None:
        headers["content-type"] = content_type
    return client.post(path, content=body, headers=headers)


def assert_error(resp, status: int, error_type: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_type"] == error_type and body["error"] and body["request_id"]
    return body


# -- 1. a non-ASCII X-API-Key is a wrong key (401), not a 500 -------------------------------------------


@pytest.mark.parametrize("path", ["/v1/admin/reload", "/v1/triage"])
def test_a_non_ascii_api_key_is_401_not_500(client, path):
    for raw in (b"\xe9", "密钥".encode(), b"admin-key\xff"):
        resp = client.post(path, json={"text": "快递丢了"}, headers={"X-API-Key": raw})
        assert_error(resp, 401, "unauthorized")
    assert client.post("/v1/triage", json={"text": "快递丢了"}).status_code == 200


# -- 2. a lone surrogate is refused before inference; the core never crashes on one ----------------------


def test_a_lone_surrogate_is_422_for_singles_and_batches_before_any_inference(client, monkeypatch):
    import serving.service

    ran = []
    monkeypatch.setattr(serving.service, "predict_and_score", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(MicroBatcher, "predict", lambda *a, **k: ran.append(1))  # the dynamic-batching path
    single = json.dumps({"text": "快递没到\ud800"}).encode()  # ASCII JSON: the surrogate travels as \ud800
    assert_error(raw_post(client, "/v1/triage", single), 422, "validation_error")
    batch = json.dumps({"items": [{"text": "好的"}, {"text": "快递\udfff没到"}]}).encode()
    body = assert_error(raw_post(client, "/v1/triage/batch", batch), 422, "validation_error")
    assert "items.1.text" in body["error"]
    item_id = json.dumps({"items": [{"id": "a\ud800", "text": "好的"}]}).encode()
    assert_error(raw_post(client, "/v1/triage/batch", item_id), 422, "validation_error")
    assert ran == [], "refused before inference was paid for"


def result(severity: str = "一级") -> TriageResult:
    return TriageResult(
        category=LabelScore(label="支付与资金安全", score=0.9, runner_up="账户与隐私"),
        severity=LabelScore(label=severity, score=0.9, runner_up="二级"),
        sentiment=SentimentScore(label="愤怒", score=0.9, runner_up="不满", emotion_index=90.0),
        model_version="test",
    )


def test_the_escalation_scorer_survives_a_lone_surrogate():
    esc = default_scorer().score(result(), "快递没到\ud800再不处理我就报警")
    assert "legal_media_risk" in {t.name for t in esc.triggers}


# -- 3. dates the SLA arithmetic cannot hold are 422, and the core refuses them too ---------------------


@pytest.mark.parametrize("field", ["received_at", "tier_entered_at"])
@pytest.mark.parametrize("value", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+14:00", "2200-01-01T00:00:00+08:00"])
def test_out_of_range_context_dates_are_422_not_500(client, field, value):
    body = {"text": FRAUD, field: value, "current_tier": "L4"}
    err = assert_error(client.post("/v1/triage", json=body), 422, "validation_error")
    assert err["error"].startswith(field) and "outside 1970-2199" in err["error"]
    assert_error(client.post("/v1/triage/batch", json={"items": [body]}), 422, "validation_error")
    with pytest.raises(ValueError, match="outside"):
        EscalationContext.coerce({field: value})


def test_the_edges_of_the_accepted_years_still_score(client):
    late = client.post("/v1/triage", json={"text": FRAUD, "received_at": "2199-12-31T23:59:59+08:00", "current_tier": "L4"})
    assert late.status_code == 200, late.text
    assert late.json()["escalation"]["tier_due"] > "2199-12-31"
    early = client.post("/v1/triage", json={"text": FRAUD, "received_at": "1970-01-02T00:00:00+00:00"})
    assert early.status_code == 200, early.text


# -- 4. the X-Request-ID echo is always a sendable header ------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("a" * 127 + " " + "b" * 10, "a" * 127 + "b"),  # the 128th character was a space: h11 refused the reply
        ("a" * 127 + "\t", "a" * 127),
        ("  req-1  ", "req-1"),
        ("x" * 500, "x" * 128),
    ],
)
def test_the_request_id_echo_never_ends_in_whitespace(client, sent, echoed):
    for path in ("/healthz", "/v1/triage"):
        resp = (
            client.get(path, headers={"X-Request-ID": sent})
            if path == "/healthz"
            else client.post(path, json={"text": "快递"}, headers={"X-Request-ID": sent})
        )
        assert resp.status_code == 200
        assert resp.headers["x-request-id"] == echoed
    assert client.post("/v1/triage", json={"text": "快递"}, headers={"X-Request-ID": sent}).json()["request_id"] == echoed


def test_an_unusable_request_id_is_replaced():
    assert clean_request_id(b" \t ", 128) != "" and len(clean_request_id(b"\xe9\xff", 128)) == 32
    assert clean_request_id(b"ok\xe9id", 128) == "okid"


# -- 5. body size, media type and encoding ---------------------------------------------------------------


def test_a_streamed_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(3):
            yield b" " * (1024 * 1024)

    resp = client.post("/v1/triage", content=chunks(), headers={"content-type": "application/json"})
    assert_error(resp, 413, "payload_too_large")


@pytest.mark.parametrize(
    "content_type", ["application/evil+json", "text/plain", "application/x-www-form-urlencoded", None, "application/json; charset=utf-16"]
)
def test_bodies_not_sent_as_utf8_json_are_415(client, content_type):
    assert_error(raw_post(client, "/v1/triage", b'{"text": "\xe5\xbf\xab\xe9\x80\x92"}', content_type), 415, "unsupported_media_type")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "gbk"])
def test_bodies_that_are_not_utf8_are_422_invalid_json(client, encoding):
    body = json.dumps({"text": "快递丢了"}, ensure_ascii=False).encode(encoding)
    assert_error(raw_post(client, "/v1/triage", body), 422, "invalid_json")


def test_utf8_json_with_an_explicit_charset_is_accepted(client):
    body = json.dumps({"text": "快递丢了"}, ensure_ascii=False).encode()
    assert raw_post(client, "/v1/triage", body, "application/json; charset=UTF-8").status_code == 200


# -- 7. a huge batch is refused by its item count before any item is validated ---------------------------


def test_a_huge_batch_is_413_before_its_items_are_validated(client, monkeypatch):
    import serving.schemas

    validated = []
    real = serving.schemas.normalize_text
    monkeypatch.setattr(serving.schemas, "normalize_text", lambda t: validated.append(1) or real(t))
    body = b'{"items": [' + b",".join([b'{"text":"a"}'] * 130_000) + b"]}"
    assert len(body) < 2 * 1024 * 1024
    start = time.perf_counter()
    err = assert_error(raw_post(client, "/v1/triage/batch", body), 413, "batch_too_large")
    assert "130000 items" in err["error"]
    assert validated == [], "no item was validated"
    assert time.perf_counter() - start < 3.0
    # at the limit, items are validated as usual
    assert client.post("/v1/triage/batch", json={"items": [{"text": "快递"}] * 64}).status_code == 200
