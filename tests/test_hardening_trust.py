"""Issue 14, items 9 and 11: keys have scopes, and /metrics is scoped or on its own port.

(Feedback records carrying the key id, feedback limits and trusted-scope merging are in
test_corrections.py; reload confinement and the canary set in test_reload.py.)
"""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.auth import KeyRing, parse_entry
from serving.settings import Settings

KEYS = {
    "api_keys": ["triage-key"],
    "feedback_keys": ["qa-zhang:fb-key"],
    "metrics_keys": ["prometheus:scrape-key"],
    "admin_keys": ["ops:admin-key"],
}


@pytest.fixture(scope="module")
def client(served_model_dir, tmp_path_factory):
    settings = Settings(model_dir=served_model_dir, corrections_dir=tmp_path_factory.mktemp("corr"), **KEYS)
    with TestClient(create_app(settings)) as c:
        yield c


def status(client: TestClient, method: str, path: str, key: str | None, **kw) -> int:
    headers = {"X-API-Key": key} if key else {}
    return client.request(method, path, headers=headers, **kw).status_code


def test_each_key_reaches_exactly_its_scope(client):
    triage = ("POST", "/v1/triage", {"json": {"text": "快递丢了"}})
    feedback = ("POST", "/v1/feedback", {"json": {"text": "快递丢了", "category": "物流配送"}})
    metrics = ("GET", "/metrics", {})
    reload = ("POST", "/v1/admin/reload", {"json": {}})
    expected = {
        "triage-key": {"triage": 200, "feedback": 403, "metrics": 403, "reload": 403},
        "fb-key": {"triage": 403, "feedback": 201, "metrics": 403, "reload": 403},
        "scrape-key": {"triage": 403, "feedback": 403, "metrics": 200, "reload": 403},
        None: {"triage": 401, "feedback": 401, "metrics": 401, "reload": 401},
        "wrong": {"triage": 401, "feedback": 401, "metrics": 401, "reload": 401},
    }
    for key, want in expected.items():
        got = {name: status(client, m, p, key, **kw) for name, (m, p, kw) in zip(want, (triage, feedback, metrics, reload), strict=True)}
        assert got == want, key


def test_an_admin_key_has_every_scope(client):
    assert status(client, "POST", "/v1/triage", "admin-key", json={"text": "快递丢了"}) == 200
    assert status(client, "GET", "/metrics", "admin-key") == 200
    assert status(client, "POST", "/v1/feedback", "admin-key", json={"text": "快递丢了", "category": "物流配送"}) == 201


def test_prometheus_may_send_a_bearer_token(client):
    resp = client.get("/metrics", headers={"Authorization": "Bearer scrape-key"})
    assert resp.status_code == 200 and "triage_requests_in_flight" in resp.text
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_metrics_are_open_only_while_no_key_is_configured(served_model_dir):
    with TestClient(create_app(Settings(model_dir=served_model_dir))) as c:
        assert c.get("/metrics").status_code == 200
    with TestClient(create_app(Settings(model_dir=served_model_dir, admin_keys=["a"]))) as c:
        assert c.get("/metrics").status_code == 401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_can_move_to_their_own_port(served_model_dir):
    port = free_port()
    app = create_app(Settings(model_dir=served_model_dir, api_keys=["k"], metrics_port=port))
    with TestClient(app) as c:
        assert c.get("/metrics", headers={"X-API-Key": "k"}).status_code == 404, "not on the API port"
        c.post("/v1/triage", json={"text": "快递丢了"}, headers={"X-API-Key": "k"})
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "triage_predictions_total" in scraped.text
    with pytest.raises(httpx.TransportError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_key_entries_name_their_key_and_secrets_never_become_ids():
    assert parse_entry("qa-li:s3cret") == ("qa-li", "s3cret")
    derived, secret = parse_entry("s3cret")
    assert secret == "s3cret" and derived.startswith("key-") and "s3cret" not in derived
    ring = KeyRing({"triage": ["a:x"], "feedback": ["a:x"]})
    [key] = ring.keys
    assert key.scopes == {"triage", "feedback"} and ring.authenticate("x") is key and ring.authenticate("\xe9") is None
    with pytest.raises(ValueError, match="unique"):
        KeyRing({"triage": ["a:x"], "admin": ["a:y"]})
