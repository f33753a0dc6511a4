"""Models shipped in the package are reachable by name (``--model student``) as well as by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from triage_model.model_dir import BUNDLED_MODELS, DEFAULT_MODEL_DIR, STUDENT_MODEL_DIR, read_meta, resolve_model_dir
from triage_model.predictor import TriagePredictor


def test_unset_and_default_mean_the_shipped_default():
    assert resolve_model_dir(None) == DEFAULT_MODEL_DIR
    assert resolve_model_dir("") == DEFAULT_MODEL_DIR
    assert resolve_model_dir("default") == DEFAULT_MODEL_DIR


def test_a_bundled_name_resolves_to_its_package_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("student") == STUDENT_MODEL_DIR
    assert set(BUNDLED_MODELS) == {"default", "student"}


def test_an_existing_folder_of_the_same_name_wins_over_the_bundled_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "student").mkdir()
    assert resolve_model_dir("student").resolve() == (tmp_path / "student").resolve()


def test_any_other_value_is_a_path(tmp_path):
    assert resolve_model_dir(tmp_path / "x") == tmp_path / "x"
    assert resolve_model_dir("runs/student-onnx") == Path("runs/student-onnx")


@pytest.mark.skipif(not (STUDENT_MODEL_DIR / "triage_config.json").exists(), reason="no bundled student in this checkout")
def test_the_bundled_student_loads_by_name_and_is_a_smaller_encoder_than_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    student = TriagePredictor.from_pretrained("student")
    assert student.version == read_meta(STUDENT_MODEL_DIR).model_version
    assert student.version != read_meta(DEFAULT_MODEL_DIR).model_version
    assert read_meta(STUDENT_MODEL_DIR).train_config.get("student_layers", 12) < 12
    out = student.predict(["快递三天了还没到，电话也打不通，到底怎么回事"])
    assert out[0].category  # a full prediction, not an empty shell


@pytest.mark.skipif(not (STUDENT_MODEL_DIR / "triage_config.json").exists(), reason="no bundled student in this checkout")
def test_the_api_serves_the_bundled_student_when_configured_by_name(monkeypatch, tmp_path):
    """``TRIAGE_MODEL_DIR=student`` (what ``triage serve --model student`` sets) serves the student end to end."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIAGE_MODEL_DIR", "student")
    with TestClient(create_app(Settings())) as client:
        body = client.post("/v1/triage", json={"text": "孩子差点把玩具上掉下来的小零件吞下去，太危险了"}).json()
    assert body["model_version"] == read_meta(STUDENT_MODEL_DIR).model_version
    assert body["severity"]["label"] in ("一级", "二级", "三级")
