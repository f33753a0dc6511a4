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


ISSUE_12_REPORTED_MISSES = [
    # The four urgent complaints a new user saw graded 二级 or 三级 (issue 12), written as customers write them.
    "买的积木玩具有个小零件一拧就掉，我家三岁的儿子拿着就往嘴里塞，幸好我看见了抠出来。这种东西怎么能卖给小孩？",
    "上门修空调的师傅嫌我催他，走的时候说了句“你家住哪我记住了”，我现在晚上都不敢一个人在家。",
    "你们APP的订单分享链接点开能看到别人的名字、手机号和收货地址，我随便改了链接后面的数字就看到好几个陌生人的信息。",
    "接到自称你们客服的电话说商品有质量问题要退款，让我加了一个退款账户，我按他说的操作，卡里被转走了8000块。我自己也是糊涂，但骗子知道我的订单号。",
]


@pytest.mark.parametrize("name", sorted(BUNDLED_MODELS))
def test_every_bundled_model_grades_the_reported_urgent_misses_as_urgent(name):
    """A regression gate for promotion: a model that lets one of these slip back to 二级 / 三级 is not shipped."""
    model_dir = BUNDLED_MODELS[name]
    if not (model_dir / "triage_config.json").exists():
        pytest.skip(f"no bundled {name} model in this checkout")
    results = TriagePredictor.from_pretrained(model_dir).predict(ISSUE_12_REPORTED_MISSES)
    assert [r.severity.label for r in results] == ["一级"] * len(ISSUE_12_REPORTED_MISSES)
