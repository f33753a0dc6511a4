"""The grading API: real answers, clear 4xx errors in one JSON shape, and it keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings


@pytest.fixture(scope="module")
def client(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir, api_keys=[], admin_keys=["admin-secret"]))
    with TestClient(app) as c:
        yield c


def assert_error(resp, status: int, error_type: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "error_type", "request_id"}
    assert body["error"] and body["request_id"]
    if error_type:
        assert body["error_type"] == error_type
    return body


def test_a_real_complaint_gets_all_three_heads(client):
    resp = client.post("/v1/triage", json={"text": "我的银行卡昨晚被盗刷了五千块，不是我本人操作的！"})
    assert resp.status_code == 200
    body = resp.json()
    from triage_model.schema import CATEGORIES, SENTIMENTS, SEVERITIES

    assert body["category"]["label"] in CATEGORIES
    assert body["severity"]["label"] in SEVERITIES
    assert body["sentiment"]["label"] in SENTIMENTS
    assert 0 <= body["sentiment"]["emotion_index"] <= 100
    assert 0 < body["category"]["score"] <= 1
    assert body["model_version"] and body["request_id"]


def test_request_id_is_echoed(client):
    resp = client.post("/v1/triage", json={"text": "快递丢了"}, headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    assert resp.json()["request_id"] == "abc-123"


@pytest.mark.parametrize(
    ("body", "where"),
    [({"text": ""}, "text"), ({"text": "   \n\t "}, "text"), ({"text": "\x00\x01\u200b"}, "text"), ({}, "text"), ({"text": 42}, "text")],
)
def test_empty_missing_or_wrongly_typed_text_is_rejected_with_422(client, body, where):
    err = assert_error(client.post("/v1/triage", json=body), 422, "validation_error")
    assert err["error"].startswith(where)


def test_malformed_json_is_rejected_with_422(client):
    assert_error(client.post("/v1/triage", content=b'{"text": ', headers={"content-type": "application/json"}), 422, "invalid_json")


def test_unknown_field_and_bad_context_are_rejected(client):
    assert_error(client.post("/v1/triage", json={"text": "快递丢了", "txet": "typo"}), 422)
    assert_error(client.post("/v1/triage", json={"text": "快递丢了", "repeat_count": -1}), 422)
    assert_error(client.post("/v1/triage", json={"text": "快递丢了", "received_at": "2026-11-29T10:00:00"}), 422)
    assert_error(client.post("/v1/triage", json={"text": "快递丢了", "current_tier": "L9"}), 422)


def test_over_long_text_is_cut_head_and_tail(client):
    text = "开头说快递丢了。" + "啊" * 6000 + "结尾要求退款"
    body = client.post("/v1/triage", json={"text": text}).json()
    assert body["truncated"] is True


def test_huge_text_and_huge_body_are_413(client):
    assert_error(client.post("/v1/triage", json={"text": "字" * 100_001}), 413, "text_too_large")
    assert_error(client.post("/v1/triage", content=b"x" * (2 * 1024 * 1024 + 1), headers={"content-type": "application/json"}), 413)


def test_batch_results_come_back_in_request_order(client):
    texts = ["请问怎么开发票？", "我的账号被盗了，有人用我的号发广告！", "谢谢客服，问题解决了", "物流三天没更新"]
    single = [client.post("/v1/triage", json={"text": t}).json() for t in texts]
    batch = client.post("/v1/triage/batch", json={"items": [{"id": f"c{i}", "text": t} for i, t in enumerate(texts)]}).json()
    assert [r.get("id") for r in batch["results"]] == [f"c{i}" for i in range(len(texts))], "each item echoes its id, in order"
    # int8 activations are quantized per batch tensor, so scores move slightly with batch company: a
    # confident prediction keeps its label and nearly its score; a near-tie may swap with its runner-up only.
    for one, many in zip(single, batch["results"], strict=True):
        for head in ("category", "severity", "sentiment"):
            if one[head]["score"] >= 0.5:
                assert many[head]["label"] == one[head]["label"], head
                assert abs(one[head]["score"] - many[head]["score"]) < 0.1, head
            else:
                assert many[head]["label"] in (one[head]["label"], one[head]["runner_up"]), head


def test_batch_items_may_carry_an_id_that_comes_back_on_their_result(client):
    items = [{"id": "T-1", "text": "请问怎么开发票？"}, {"text": "物流三天没更新"}, {"id": "订单-3", "text": "银行卡被盗刷了"}]
    body = client.post("/v1/triage/batch", json={"items": items}).json()
    assert [r["id"] for r in body["results"]] == ["T-1", None, "订单-3"]
    assert all(r["category"]["label"] for r in body["results"])
    assert_error(client.post("/v1/triage/batch", json={"items": [{"id": "", "text": "好"}]}), 422, "validation_error")
    assert_error(client.post("/v1/triage", json={"id": "T-1", "text": "好"}), 422, "validation_error")  # singles take no id


def test_batch_limits(client):
    assert_error(client.post("/v1/triage/batch", json={"items": [{"text": "快递丢了"}] * 65}), 413, "batch_too_large")
    assert_error(client.post("/v1/triage/batch", json={"items": []}), 422)
    assert_error(client.post("/v1/triage/batch", json={"items": [{"text": "好"}, {"text": ""}]}), 422)


def test_service_keeps_serving_after_errors(client):
    for _ in range(3):
        client.post("/v1/triage", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert client.post("/v1/triage", json={"text": "还能用吗"}).status_code == 200


def test_health_ready_model_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model_version"]
    info = client.get("/v1/model").json()
    assert info["labels"]["severity"] == ["一级", "二级", "三级"]
    assert_error(client.get("/metrics"), 401, "unauthorized")  # keys are configured: metrics are scoped
    metrics = client.get("/metrics", headers={"X-API-Key": "admin-secret"}).text
    assert "triage_request_latency_seconds" in metrics and "triage_predictions_total" in metrics


def test_openapi_has_chinese_examples(client):
    spec = json.dumps(client.get("/openapi.json").json(), ensure_ascii=False)
    assert "/v1/triage" in spec and "会员" in spec and "12315" in spec


def test_api_key_is_required_when_configured(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir, api_keys=["k1"]))
    with TestClient(app) as c:
        assert_error(c.post("/v1/triage", json={"text": "快递丢了"}), 401, "unauthorized")
        assert c.post("/v1/triage", json={"text": "快递丢了"}, headers={"X-API-Key": "k1"}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_serving_never_imports_torch(served_model_dir):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from serving.app import create_app\n"
        "from serving.settings import Settings\n"
        f"app = create_app(Settings(model_dir={str(served_model_dir)!r}))\n"
        "with TestClient(app) as c:\n"
        "    assert c.post('/v1/triage', json={'text': '快递丢了'}).status_code == 200\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_settings_come_from_the_documented_environment_variables(monkeypatch):
    import re

    from tests.conftest import REPO

    monkeypatch.setenv("TRIAGE_THREADS", "3")
    monkeypatch.setenv("TRIAGE_API_KEYS", " k1, ops:k2 ,")
    monkeypatch.setenv("TRIAGE_MAX_CONCURRENT", "4")
    monkeypatch.setenv("TRIAGE_QUEUE_TIMEOUT_MS", "250")
    monkeypatch.setenv("TRIAGE_ALERT_BACKEND", "redis")
    s = Settings.from_env()
    assert (s.threads, s.api_keys, s.max_concurrent, s.queue_timeout_ms, s.alert_backend) == (3, ["k1", "ops:k2"], 4, 250, "redis")
    monkeypatch.setenv("TRIAGE_MAX_QUEUE", "many")
    with pytest.raises(ValueError, match=r"TRIAGE_MAX_QUEUE|max_queue"):
        Settings.from_env()
    # every variable the README documents is a field
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Configuration (environment)") : readme.index("## Escalation")]
    documented = {("TRIAGE_ALERT" + n if n.startswith("_") else n) for n in re.findall(r"`(TRIAGE_[A-Z_]+|_[A-Z_]+)`", section)}
    fields = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields}
    assert len(documented) > 25 and documented <= fields, sorted(documented - fields)


def test_routes_get_the_gate_through_depends(served_model_dir):
    from serving.deps import get_gate
    from serving.gate import InferenceGate

    app = create_app(Settings(model_dir=served_model_dir))
    used = []

    class CountingGate(InferenceGate):
        def slot(self, disconnected=None):
            used.append(1)
            return super().slot(disconnected)

    app.dependency_overrides[get_gate] = lambda: CountingGate(1, 1, 5)
    with TestClient(app) as c:
        assert c.post("/v1/triage", json={"text": "快递丢了"}).status_code == 200
        assert c.post("/v1/triage/batch", json={"items": [{"text": "快递丢了"}]}).status_code == 200
    assert used == [1, 1]


def test_the_triage_routes_resolve_every_dependency_on_the_event_loop():
    """No thread-pool hop per request: FastAPI runs a plain ``def`` dependency (or a class) in its thread pool,
    which cost a quarter of the event loop's time under 32 clients before the getters became coroutines."""
    import inspect

    from fastapi.routing import APIRoute

    from serving.routes.triage import router

    def calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    assert sorted(r.path for r in routes) == ["/v1/triage", "/v1/triage/batch"]
    for route in routes:
        for call in calls(route.dependant):
            target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__  # e.g. APIKeyHeader
            assert inspect.iscoroutinefunction(target), f"{route.path}: {call} runs in the thread pool"
