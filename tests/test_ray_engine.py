"""``triage predict --engine ray``: the same rows as the local engine (bad rows included), folders of
JSONL / CSV / Parquet, resume by part, a clear message without Ray, and a core that never imports Ray.

Tests that start Ray skip when it is not installed (it is the optional ``scale`` extra) and are ``slow``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, write_jsonl
from tests.test_layers import imported_top_levels
from triage_cli import ray_engine
from triage_cli.main import app
from triage_cli.ray_engine import RayRunConfig, file_chunks, plan_run, read_output_rows
from triage_model.batch import predict_file
from triage_model.escalation import load_policy
from triage_model.labeled_data import load_labeled

RECEIVED = "2026-12-01T08:00:00+08:00"  # fixed, so deadlines do not depend on when each engine ran


def complaint_rows(n: int) -> list[dict]:
    rows = load_labeled(REPO / "labeled_data").split("test")[:n]
    out = [{"id": r.id, "text": r.text, "received_at": RECEIVED, "channel": "app"} for r in rows]
    out[1]["context"] = {"repeat_count": 3, "received_at": RECEIVED}  # a nested object passes through
    return out


def write_input_with_bad_rows(path: Path, n: int) -> Path:
    """n good complaints with every kind of bad row the local engine reports in between."""
    good = complaint_rows(n)
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in good]
    lines[10:10] = [
        b"{not json",
        json.dumps({"id": good[0]["id"], "text": "重复编号"}, ensure_ascii=False).encode("utf-8"),
        json.dumps({"text": "没有编号"}, ensure_ascii=False).encode("utf-8"),
        json.dumps({"id": "empty", "text": "   "}).encode("utf-8"),
        json.dumps({"id": "ctx", "text": "退款没到", "repeat_count": "many"}, ensure_ascii=False).encode("utf-8"),
        b'{"id": "latin1", "text": "caf\xe9"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# -- without Ray -----------------------------------------------------------------------------------


def test_the_core_and_serving_never_import_ray() -> None:
    files = [p for pkg in ("triage_model", "serving") for p in (REPO / pkg).rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in files if "ray" in imported_top_levels(p)]
    assert not offenders


def test_engine_ray_without_ray_installed_fails_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_engine, "ray", None)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "快递丢了"}])
    result = CliRunner().invoke(app, ["predict", "--engine", "ray", "--input", str(src), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert 'pip install -e ".[scale]"' in result.output and not (tmp_path / "out").exists()


def test_the_local_engine_refuses_a_folder_and_names_the_ray_engine(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": "快递丢了"}])
    result = CliRunner().invoke(app, ["predict", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1 and "--engine ray" in result.output


def test_chunks_carry_the_local_engines_error_rows_and_counts(tmp_path: Path) -> None:
    src = write_input_with_bad_rows(tmp_path / "in.jsonl", 30)
    chunks = list(file_chunks(src, "in.jsonl", chunk_rows=16))
    assert [c["chunk"] for c in chunks] == [0, 1, 2] and sum(c["rows"] for c in chunks) == 36
    assert sum(c["errors"] for c in chunks) == 6
    rows = [r for c in chunks for r in json.loads(c["payload"])]
    errors = {r.get("line"): r["error"] for r in rows if "error" in r}
    assert "invalid JSON" in errors[11] and "duplicate id" in errors[12] and "missing 'id'" in errors[13]
    assert "empty text" in errors[14] and "bad context" in errors[15] and "not UTF-8" in errors[16]


def test_a_resume_is_refused_when_the_input_changed_and_a_full_folder_needs_resume(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "快递丢了"}])
    out = tmp_path / "out"
    cfg = RayRunConfig(src, out, resume=True)
    manifest, done = plan_run(cfg, "v1", load_policy())
    assert done == {}
    out.mkdir()
    (out / ray_engine.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (out / "in.jsonl").mkdir()
    (out / "in.jsonl" / "part-000000.jsonl").write_text("{}\n", encoding="utf-8")
    assert plan_run(cfg, "v1", load_policy())[1] == {"in.jsonl": frozenset({0})}
    with pytest.raises(ValueError, match="model_version changed"):
        plan_run(cfg, "v2", load_policy())
    with pytest.raises(ValueError, match="pass --resume"):
        plan_run(RayRunConfig(src, out), "v1", load_policy())
    src.write_text(src.read_text(encoding="utf-8") + '{"id": "b", "text": "又一条"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="inputs changed"):
        plan_run(cfg, "v1", load_policy())


# -- with Ray (slow) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_writes_the_same_rows_as_the_local_engine_bad_rows_included(local_ray, tmp_path: Path, served_model_dir: Path) -> None:
    src = write_input_with_bad_rows(tmp_path / "in.jsonl", 300)
    predict_file(src, tmp_path / "local.jsonl", served_model_dir)
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text(encoding="utf-8").splitlines()]
    cfg = RayRunConfig(src, tmp_path / "out", served_model_dir, workers=2, chunk_rows=100, progress=False)
    stats = ray_engine.predict_with_ray(cfg)
    assert (stats["ok"], stats["errors"], stats["chunks_written"]) == (300, 6, 4)
    assert read_output_rows(tmp_path / "out") == local


@pytest.mark.slow
def test_a_folder_of_jsonl_csv_and_parquet_is_scored_file_by_file(local_ray, tmp_path: Path, served_model_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: r[k] for k in ("id", "text", "received_at")} for r in complaint_rows(40)]
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", rows[:20])
    with (folder / "b.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "received_at"])
        writer.writeheader()
        writer.writerows(rows[20:30])
    (folder / "sub").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[30:]), folder / "sub" / "c.parquet")
    cfg = RayRunConfig(folder, tmp_path / "out", served_model_dir, workers=2, progress=False)
    assert ray_engine.predict_with_ray(cfg)["ok"] == 40
    parts = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("part-*"))
    assert parts == ["a.jsonl/part-000000.jsonl", "b.csv/part-000000.jsonl", "sub/c.parquet/part-000000.jsonl"]
    got = {r["id"]: r for r in read_output_rows(tmp_path / "out")}
    predict_file(write_jsonl(tmp_path / "all.jsonl", rows), tmp_path / "local.jsonl", served_model_dir)
    for line in (tmp_path / "local.jsonl").read_text(encoding="utf-8").splitlines():
        want = json.loads(line)
        assert got[want["id"]]["severity"] == want["severity"] and got[want["id"]]["escalation"] == want["escalation"]


@pytest.mark.slow
def test_resume_rewrites_only_the_missing_parts(local_ray, tmp_path: Path, served_model_dir: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", complaint_rows(120))
    out = tmp_path / "out"
    cfg = RayRunConfig(src, out, served_model_dir, workers=2, chunk_rows=40, progress=False)
    ray_engine.predict_with_ray(cfg)
    first = read_output_rows(out)
    parts = sorted((out / "in.jsonl").glob("part-*.jsonl"))
    (parts[1]).unlink()  # as if the run had died before writing it
    kept = {p.name: p.stat().st_mtime_ns for p in (parts[0], parts[2])}
    cfg.resume = True
    stats = ray_engine.predict_with_ray(cfg)
    assert (stats["chunks_written"], stats["chunks_skipped"], stats["ok"]) == (1, 2, 120)
    assert {p.name: p.stat().st_mtime_ns for p in (parts[0], parts[2])} == kept
    assert read_output_rows(out) == first
