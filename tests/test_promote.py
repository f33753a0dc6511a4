"""``triage promote``: a worse challenger is refused with a report; a not-worse one is swapped in atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import triage_cli.promote as promote_mod
from tests.conftest import LABELED, write_jsonl
from triage_cli.main import app
from triage_cli.promote import DECISION_FILE, OPTIONAL_FILES, SERVING_FILES, decide, load_promote_config
from triage_model.model_dir import META_FILE, ONNX_FP32_FILE
from triage_model.schema import HEADS


def fake_model(src: Path, dest: Path, version: str) -> Path:
    """A model directory made of links to a real export, with its own version (and an fp32 file to leave behind)."""
    dest.mkdir(parents=True)
    for name in (*SERVING_FILES, *OPTIONAL_FILES, ONNX_FP32_FILE):
        if name != META_FILE and (src / name).exists():
            (dest / name).symlink_to((src / name).resolve())
    meta = json.loads((src / META_FILE).read_text(encoding="utf-8"))
    (dest / META_FILE).write_text(json.dumps({**meta, "model_version": version}, ensure_ascii=False), encoding="utf-8")
    return dest


def version_of(model_dir: Path) -> str:
    return json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))["model_version"]


@pytest.fixture
def dirs(served_model_dir: Path, tmp_path: Path) -> dict[str, Path]:
    rows = []
    for path in sorted((LABELED / "complaints").glob("*.jsonl")):
        for split in ("train", "dev", "test"):  # train + dev: the n-gram baseline the gate compares against is fitted here
            rows += [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r.get("split") == split][:3]
    data = tmp_path / "labeled_data"
    write_jsonl(data / "complaints" / "sample.jsonl", rows)
    return {
        "champion": fake_model(served_model_dir, tmp_path / "serving" / "default_model", "champion-v1"),
        "challenger": fake_model(served_model_dir, tmp_path / "runs" / "new", "challenger-v2"),
        "data": data,
        "report": tmp_path / "promote-report",
    }


def metrics(macro_f1: dict[str, float], recall_critical: float) -> dict:
    heads = {}
    for head in HEADS:
        per_class = {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10} for label in HEADS[head]}
        heads[head] = {"n": 30, "accuracy": 0.5, "macro_f1": macro_f1[head], "ece": 0.05, "per_class": per_class}
    heads["severity"]["per_class"]["一级"]["recall"] = recall_critical
    return heads


CHAMPION = metrics({"category": 0.80, "severity": 0.70, "sentiment": 0.60}, 0.90)
BASELINE = metrics({"category": 0.70, "severity": 0.65, "sentiment": 0.55}, 0.80)


@pytest.fixture
def evaluator(monkeypatch: pytest.MonkeyPatch, dirs: dict[str, Path]):
    """Replace the test-split evaluation with chosen numbers: champion fixed, challenger set per test."""
    chosen: dict[str, dict] = {}

    def fake(model_dir: Path, data_dir: Path, split: str = "test", escalation: bool = True) -> dict:
        assert split == "test" and Path(data_dir) == dirs["data"] and not escalation
        is_champion = Path(model_dir) == dirs["champion"]
        version = "champion-v1" if is_champion else "challenger-v2"
        return {"model_version": version, "split": split, "n": 30, "heads": CHAMPION if is_champion else chosen["heads"]}

    monkeypatch.setattr(promote_mod, "evaluate_split", fake)
    monkeypatch.setattr(promote_mod, "measure_baseline", lambda data_dir, split, model_heads=None: {"heads": BASELINE})
    return chosen


@pytest.fixture
def no_report(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Skip drawing the refusal report where a test only checks the decision (keeps the suite fast)."""
    import eval.report

    written: list[Path] = []
    monkeypatch.setattr(eval.report, "build_report", lambda model, data, out, **kw: written.append(Path(out)))
    return written


def run_promote(dirs: dict[str, Path], *extra: str):
    args = ["promote", str(dirs["challenger"]), "--champion", str(dirs["champion"]), "--data-dir", str(dirs["data"])]
    return CliRunner().invoke(app, [*args, "--report-dir", str(dirs["report"]), *extra])


def test_a_worse_model_is_refused_with_exit_1_and_a_comparison_report(dirs: dict[str, Path], evaluator: dict) -> None:
    evaluator["heads"] = metrics({"category": 0.74, "severity": 0.72, "sentiment": 0.61}, 0.92)
    result = run_promote(dirs)
    assert result.exit_code == 1, result.output
    assert "refused" in result.output and "DROP" in result.output
    assert version_of(dirs["champion"]) == "champion-v1", "the champion stays in place"
    decision = json.loads((dirs["report"] / DECISION_FILE).read_text(encoding="utf-8"))
    assert decision["promote"] is False
    assert [(c["head"], c["metric"]) for c in decision["checks"] if not c["ok"]] == [("category", "macro_f1")]
    page = (dirs["report"] / "report.html").read_text(encoding="utf-8")
    assert "Challenger vs champion" in page and "champion-v1" in page
    assert (dirs["report"] / "flips.csv").exists() and (dirs["report"] / "misclassified.csv").exists()


def test_a_drop_in_critical_recall_alone_is_refused(dirs: dict[str, Path], evaluator: dict, no_report: list[Path]) -> None:
    evaluator["heads"] = metrics({"category": 0.85, "severity": 0.75, "sentiment": 0.65}, 0.85)
    result = run_promote(dirs)
    assert result.exit_code == 1, result.output
    assert "recall_一级" in result.output and no_report == [dirs["report"]]


def test_a_not_worse_model_is_promoted_with_only_the_serving_files(dirs: dict[str, Path], evaluator: dict) -> None:
    evaluator["heads"] = metrics({"category": 0.795, "severity": 0.70, "sentiment": 0.61}, 0.90)  # -0.005 is within 0.01
    result = run_promote(dirs)
    assert result.exit_code == 0, result.output
    champion = dirs["champion"]
    assert version_of(champion) == "challenger-v2"
    carried = [name for name in OPTIONAL_FILES if (dirs["challenger"] / name).exists()]
    assert sorted(p.name for p in champion.iterdir()) == sorted((*SERVING_FILES, *carried)), "no fp32 model.onnx, nothing else"
    assert not any(p.is_symlink() for p in champion.iterdir()), "real copies, not links into the run folder"
    assert [p.name for p in champion.parent.iterdir()] == [champion.name], "no staging or backup folder left"
    assert not (dirs["report"] / "report.html").exists()
    assert json.loads((dirs["report"] / DECISION_FILE).read_text(encoding="utf-8"))["promote"] is True
    card = (champion / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Against the n-gram baseline" in card and "| category | 0.795 | 0.700 | +9.5 |" in card


def test_a_model_not_ahead_of_the_ngram_baseline_on_every_head_is_refused(
    dirs: dict[str, Path], evaluator: dict, no_report: list[Path], tmp_path: Path
) -> None:
    evaluator["heads"] = metrics({"category": 0.85, "severity": 0.75, "sentiment": 0.55}, 0.95)  # sentiment ties the baseline
    result = run_promote(dirs, "--tolerance", "0.1")
    assert result.exit_code == 1, result.output
    decision = json.loads((dirs["report"] / DECISION_FILE).read_text(encoding="utf-8"))
    assert [(c["head"], c["metric"]) for c in decision["checks"] if not c["ok"]] == [("sentiment", "macro_f1_vs_ngram_baseline")]
    assert run_promote(dirs, "--tolerance", "0.1", "--no-beat-baseline").exit_code == 0
    card = (dirs["champion"] / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| sentiment | 0.550 | 0.550 | +0.0 |" in card, "the card carries the baseline even with the gate off"
    assert "baseline gate was off" in card


def test_tolerance_comes_from_promote_yaml_and_the_flag_overrides_it(
    dirs: dict[str, Path], evaluator: dict, no_report: list[Path], tmp_path: Path
) -> None:
    assert load_promote_config().tolerance == pytest.approx(0.01)
    evaluator["heads"] = metrics({"category": 0.76, "severity": 0.70, "sentiment": 0.60}, 0.90)  # -0.04
    loose = tmp_path / "promote.yaml"
    loose.write_text("tolerance: 0.05\n", encoding="utf-8")
    assert run_promote(dirs, "--config", str(loose), "--tolerance", "0.02").exit_code == 1
    assert run_promote(dirs, "--config", str(loose)).exit_code == 0


def test_drop_exactly_at_the_tolerance_passes() -> None:
    challenger = metrics({"category": 0.79, "severity": 0.69, "sentiment": 0.59}, 0.89)
    assert all(c.ok for c in decide(CHAMPION, challenger, 0.01))
    assert not any(c.ok for c in decide(CHAMPION, challenger, 0.0099))


def test_the_same_model_evaluated_for_real_is_promoted(dirs: dict[str, Path]) -> None:
    result = run_promote(dirs)
    assert result.exit_code == 0, result.output
    assert version_of(dirs["champion"]) == "challenger-v2"


def test_missing_champion_needs_first_and_missing_int8_is_an_error(dirs: dict[str, Path], tmp_path: Path) -> None:
    fresh = {**dirs, "champion": tmp_path / "nothing" / "default_model"}
    result = run_promote(fresh)
    assert result.exit_code == 2 and "--first" in result.output
    assert run_promote(fresh, "--first").exit_code == 0
    assert version_of(fresh["champion"]) == "challenger-v2"
    (dirs["challenger"] / "model.int8.onnx").unlink()
    result = run_promote(dirs)
    assert result.exit_code == 2 and "model.int8.onnx" in result.output


def test_a_swap_cut_between_its_renames_is_recovered_before_the_next_promote(dirs: dict[str, Path]) -> None:
    """Crash after `champion → .old-*` but before `staging → champion`: the next promote puts it back."""
    champion = dirs["champion"]
    backup = champion.with_name(f".{champion.name}.old-deadbeef")
    champion.rename(backup)
    assert "restored" in promote_mod.recover_interrupted_swap(champion)
    assert version_of(champion) == "champion-v1" and not backup.exists()
    (champion.parent / f".{champion.name}.old-0badf00d").mkdir()
    assert "stale" in promote_mod.recover_interrupted_swap(champion)
    assert [p.name for p in champion.parent.iterdir()] == [champion.name]


def test_first_install_still_requires_beating_the_n_gram_baseline(dirs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """--first skips the champion comparison, not the baseline gate: nothing is installed behind the baseline."""
    fresh = {**dirs, "champion": tmp_path / "bundled" / "student_model"}
    unbeatable = metrics({"category": 0.99, "severity": 0.99, "sentiment": 0.99}, 0.99)
    monkeypatch.setattr(promote_mod, "measure_baseline", lambda data_dir, split, model_heads=None: {"heads": unbeatable})
    result = run_promote(fresh, "--first")
    assert result.exit_code == 1 and "baseline" in result.output, result.output
    assert not fresh["champion"].exists()
