"""Atomic hot reload: a good model swaps in without dropping requests; a bad one is refused.

Refused too (issue 14, item 10): directories outside the configured models root (by path, ``../`` or
symlink), an ``onnx_file`` that points outside its model directory, and a model that loads but gets
the pinned canary set wrong (negated temperatures). No refusal names an absolute path.
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

ADMIN = {"X-API-Key": "admin-secret"}
FRAUD = "我的银行卡昨晚被盗刷了2980元，不是我本人操作的！再不处理我就报警并且去12315投诉！"
ABSOLUTE_PATH = re.compile(r"(?<![\w.>])/[\w.-]+/")


@pytest.fixture()
def models_root(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture()
def model_copy(models_root, served_model_dir):
    """A serving copy of the model (without the large fp32 graph) under a new version name."""
    dst = models_root / "candidate"
    shutil.copytree(served_model_dir, dst, ignore=shutil.ignore_patterns("model.onnx"))
    edit_meta(dst, model_version="candidate-v2")
    return dst


def edit_meta(model_dir, **changes) -> None:
    meta = json.loads((model_dir / "triage_config.json").read_text(encoding="utf-8"))
    meta.update(changes)
    (model_dir / "triage_config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


@pytest.fixture()
def client(served_model_dir, models_root):
    settings = Settings(model_dir=served_model_dir, admin_keys=["admin-secret"], models_root=models_root, queue_timeout_ms=60_000)
    with TestClient(create_app(settings)) as c:
        yield c


def version(client) -> str:
    return client.post("/v1/triage", json={"text": "快递丢了"}).json()["model_version"]


def reload(client, model_dir) -> object:
    return client.post("/v1/admin/reload", json={"model_dir": str(model_dir)}, headers=ADMIN)


def assert_refused(resp, status: int, error_type: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_type"] == error_type
    assert not ABSOLUTE_PATH.search(body["error"]), f"absolute path in {body['error']!r}"
    return body


def test_reload_requires_the_admin_key(client, model_copy):
    assert client.post("/v1/admin/reload", json={"model_dir": str(model_copy)}).status_code == 401
    assert client.post("/v1/admin/reload", json={"model_dir": str(model_copy)}, headers={"X-API-Key": "nope"}).status_code == 401


def test_good_model_is_swapped_in_without_dropping_requests(client, model_copy):
    before = version(client)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.post, "/v1/triage", json={"text": f"第{i}条：物流太慢了"}) for i in range(24)]
        resp = reload(client, model_copy)
        statuses = [f.result().status_code for f in futures]
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "reloaded", "previous_version": before, "model_version": "candidate-v2"}
    assert statuses == [200] * 24
    assert version(client) == "candidate-v2"
    assert client.get("/readyz").json()["canary"]["rows"] == 50


def test_a_path_relative_to_the_models_root_loads(client, model_copy):
    assert client.post("/v1/admin/reload", json={"model_dir": "candidate"}, headers=ADMIN).status_code == 200
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
    body = assert_refused(reload(client, model_copy), 409, "model_rejected")
    assert before in body["error"]
    assert version(client) == before


def test_directories_outside_the_models_root_are_refused(client, model_copy, models_root, tmp_path, served_model_dir):
    before = version(client)
    outside = tmp_path / "outside"
    shutil.copytree(model_copy, outside)
    (models_root / "link").symlink_to(outside, target_is_directory=True)
    for target in (str(outside), "../outside", "candidate/../../outside", "link", str(served_model_dir), str(models_root)):
        assert_refused(client.post("/v1/admin/reload", json={"model_dir": target}, headers=ADMIN), 403, "outside_models_root")
    assert version(client) == before


def test_onnx_file_pointing_outside_its_directory_is_refused(client, model_copy, models_root):
    before = version(client)
    shutil.copy(model_copy / "model.int8.onnx", models_root / "stray.onnx")
    edit_meta(model_copy, onnx_file="../stray.onnx")
    body = assert_refused(reload(client, model_copy), 409, "model_rejected")
    assert "outside the model directory" in body["error"]
    edit_meta(model_copy, onnx_file=str((models_root / "stray.onnx").resolve()))
    assert_refused(reload(client, model_copy), 409, "model_rejected")
    assert version(client) == before


def test_a_model_that_gets_the_canary_set_wrong_is_refused(client, model_copy):
    """Negated temperatures load and give finite probabilities, but flip every argmax: a fraud
    complaint went from 一级/L4 to 三级/L3. The canary set catches it before the swap."""
    first = client.post("/v1/triage", json={"text": FRAUD}).json()
    assert first["severity"]["label"] == "一级" and first["escalation"]["tier"] == "L4"
    meta = json.loads((model_copy / "triage_config.json").read_text(encoding="utf-8"))
    edit_meta(model_copy, temperatures={head: -abs(t) for head, t in meta["temperatures"].items()})
    body = assert_refused(reload(client, model_copy), 409, "model_rejected")
    assert "canary" in body["error"]
    again = client.post("/v1/triage", json={"text": FRAUD}).json()
    assert again["model_version"] == first["model_version"] and again["severity"]["label"] == "一级"


def test_without_a_models_root_only_the_configured_model_reloads(served_model_dir, model_copy):
    with TestClient(create_app(Settings(model_dir=served_model_dir, admin_keys=["admin-secret"]))) as c:
        assert_refused(reload(c, model_copy), 403, "outside_models_root")
        resp = c.post("/v1/admin/reload", headers=ADMIN)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "reloaded"
