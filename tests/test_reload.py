"""Atomic hot reload: a good model swaps in without dropping requests; a bad one is refused."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

ADMIN = {"X-API-Key": "admin-secret"}


@pytest.fixture()
def model_copy(tmp_path, served_model_dir):
    """A serving copy of the model (without the large fp32 graph) under a new version name."""
    dst = tmp_path / "candidate"
    shutil.copytree(served_model_dir, dst, ignore=shutil.ignore_patterns("model.onnx"))
    meta = json.loads((dst / "triage_config.json").read_text(encoding="utf-8"))
    meta["model_version"] = "candidate-v2"
    (dst / "triage_config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.fixture()
def client(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir, admin_keys=["admin-secret"]))
    with TestClient(app) as c:
        yield c


def version(client) -> str:
    return client.post("/v1/triage", json={"text": "快递丢了"}).json()["model_version"]


def test_reload_requires_the_admin_key(client, model_copy):
    assert client.post("/v1/admin/reload", json={"model_dir": str(model_copy)}).status_code == 401


def test_good_model_is_swapped_in_without_dropping_requests(client, model_copy):
    before = version(client)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/v1/triage", json={"text": f"第{i}条：物流太慢了"}) for i in range(24)]
        reload = client.post("/v1/admin/reload", json={"model_dir": str(model_copy)}, headers=ADMIN)
        statuses = [f.result().status_code for f in futures]
    assert reload.status_code == 200, reload.text
    assert reload.json() == {"status": "reloaded", "previous_version": before, "model_version": "candidate-v2"}
    assert statuses == [200] * 24
    assert version(client) == "candidate-v2"


@pytest.mark.parametrize("damage", ["corrupt_onnx", "missing_tokenizer", "wrong_schema", "not_a_model_dir"])
def test_corrupt_model_is_rejected_and_the_old_one_keeps_serving(client, model_copy, damage):
    before = version(client)
    if damage == "corrupt_onnx":
        (model_copy / "model.int8.onnx").write_bytes(b"\x08\x01garbage" * 100)
    elif damage == "missing_tokenizer":
        (model_copy / "tokenizer.json").unlink()
    elif damage == "wrong_schema":
        meta = json.loads((model_copy / "triage_config.json").read_text(encoding="utf-8"))
        meta["schema"]["heads"]["sentiment"] = ["负面", "正面"]
        (model_copy / "triage_config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    else:
        model_copy = model_copy / "nope"
    resp = client.post("/v1/admin/reload", json={"model_dir": str(model_copy)}, headers=ADMIN)
    assert resp.status_code == 409
    body = resp.json()
    assert body["error_type"] == "model_rejected" and before in body["error"]
    assert version(client) == before
