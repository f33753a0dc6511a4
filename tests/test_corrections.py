"""The corrections loop: ``POST /v1/feedback`` appends safely; ``triage data merge-corrections`` folds them in."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serving.app import create_app
from serving.settings import Settings
from tests.conftest import write_jsonl
from training.merge_corrections import LEDGER_FILE, MERGED_DATA_FILE, merge_corrections
from triage_cli.main import app as cli_app
from triage_model import corrections
from triage_model.corrections import append_correction, month_file, read_corrections
from triage_model.labeled_data import load_labeled, split_for_id

FRAUD = "我的银行卡昨晚凌晨被莫名扣了3次共2980元，根本不是我本人操作的！"


def app_settings(tmp_path: Path, **overrides) -> Settings:
    base = {
        "api_keys": ["k1"],
        "feedback_keys": ["qa-zhang:fb-secret"],
        "corrections_dir": tmp_path / "corrections",
        "feedback_per_minute": 6000,
        "feedback_burst": 100,
    }
    return Settings(**{**base, **overrides})


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # No `with`: the lifespan (model loading) is not needed to take feedback.
    return TestClient(create_app(app_settings(tmp_path)))


def post(client: TestClient, body: dict, key: str | None = "fb-secret"):
    # json.dumps escapes non-ASCII, so a lone surrogate travels as "\\ud800", as a JSON client may send it
    headers = {"content-type": "application/json", **({"X-API-Key": key} if key else {})}
    return client.post("/v1/feedback", content=json.dumps(body).encode(), headers=headers)


def stored(tmp_path: Path) -> list[dict]:
    files = sorted((tmp_path / "corrections").glob("*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]


def test_feedback_is_appended_with_id_and_utc_time_and_returns_201(client: TestClient, tmp_path: Path) -> None:
    r = post(client, {"request_id": "req-1", "text": FRAUD, "severity": "一级", "triggers": ["legal_media_risk"], "reviewer": "boss"})
    assert r.status_code == 201, r.text
    body = r.json()
    [line] = stored(tmp_path)
    assert line["correction_id"] == body["correction_id"] and line["received_at"] == body["received_at"]
    assert line["severity"] == "一级" and line["text"] == FRAUD
    # who wrote it is the authenticated key, never the name the caller typed
    assert line["reviewer"] == line["key_id"] == body["reviewer"] == "qa-zhang" and line["key_scope"] == "feedback"
    assert line["declared_reviewer"] == "boss" and "fb-secret" not in json.dumps(line)
    assert "category" not in line, "only the corrected heads are stored"
    assert datetime.fromisoformat(line["received_at"]).utcoffset().total_seconds() == 0
    assert (tmp_path / "corrections" / f"{datetime.now(timezone.utc):%Y-%m}.jsonl").exists()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"text": "快递没到\ud800", "severity": "一级"}, "unicode string"),
        ({"severity": "一级", "reviewer": "qa"}, "request_id"),
        ({"text": FRAUD, "reviewer": "qa"}, "correct at least one"),
        ({"text": FRAUD, "category": "快递", "reviewer": "qa"}, "category"),
        ({"text": FRAUD, "severity": "四级", "reviewer": "qa"}, "severity"),
        ({"text": FRAUD, "triggers": ["high_emotion"], "reviewer": "qa"}, "triggers"),
        ({"text": FRAUD, "severity": "一级", "reviewer": "   "}, "reviewer"),
        ({"text": FRAUD, "severity": "一级", "reviewer": "qa", "grade": "x"}, "grade"),
    ],
)
def test_invalid_feedback_is_rejected_with_422_and_not_stored(client: TestClient, tmp_path: Path, body: dict, where: str) -> None:
    r = post(client, body)
    assert r.status_code == 422, r.text
    assert r.json()["error_type"] == "validation_error" and where in r.text
    assert not list((tmp_path / "corrections").glob("*.jsonl"))


def test_feedback_requires_a_key_with_the_feedback_scope(client: TestClient, tmp_path: Path) -> None:
    body = {"text": FRAUD, "severity": "一级"}
    r = post(client, body, key=None)
    assert r.status_code == 401 and set(r.json()) >= {"error", "error_type", "request_id"}
    r = post(client, body, key="k1")  # a triage key may triage, not write training data
    assert r.status_code == 403 and r.json()["error_type"] == "forbidden"
    assert post(client, body, key="fb-secret").status_code == 201
    assert client.post("/v1/triage", json={"text": "快递"}, headers={"X-API-Key": "fb-secret"}).status_code == 403
    assert len(stored(tmp_path)) == 1


def test_feedback_is_off_until_feedback_keys_are_configured(tmp_path: Path) -> None:
    c = TestClient(create_app(Settings(corrections_dir=tmp_path / "corrections")))
    r = c.post("/v1/feedback", json={"text": FRAUD, "severity": "一级"})
    assert r.status_code == 403 and r.json()["error_type"] == "feedback_disabled"
    assert not (tmp_path / "corrections").exists()


def test_feedback_has_size_and_rate_limits(tmp_path: Path) -> None:
    c = TestClient(create_app(app_settings(tmp_path, feedback_max_text_chars=50, feedback_burst=3, feedback_per_minute=1)))
    r = post(c, {"text": "投诉" * 26, "severity": "一级"})
    assert r.status_code == 413 and r.json()["error_type"] == "text_too_large"
    r = post(c, {"text": FRAUD, "severity": "一级", "comment": "x" * 70_000})  # over the 64 KiB body limit of this route
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"
    assert [post(c, {"text": f"{i}{FRAUD}", "severity": "一级"}).status_code for i in range(3)] == [201] * 3
    r = post(c, {"text": FRAUD, "severity": "一级"})
    assert r.status_code == 429 and r.json()["error_type"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert len(stored(tmp_path)) == 3


def test_fifty_concurrent_requests_store_fifty_whole_lines(client: TestClient, tmp_path: Path) -> None:
    long_text = FRAUD * 60  # ~2 kB lines: interleaving would show up as broken JSON
    bodies = [{"text": f"{i}:{long_text}", "sentiment": "愤怒", "reviewer": f"r{i}"} for i in range(50)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda b: post(client, b), bodies))
    assert [r.status_code for r in responses] == [201] * 50
    lines = stored(tmp_path)
    assert len(lines) == 50
    assert sorted(line["declared_reviewer"] for line in lines) == sorted(f"r{i}" for i in range(50))
    assert len({line["correction_id"] for line in lines}) == 50


WRITER = """
import sys
from pathlib import Path
from triage_model.corrections import append_correction
folder, worker, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    append_correction(folder, {"text": f"w{worker}-{i} " + "投诉" * 800, "severity": "二级", "reviewer": f"w{worker}"})
"""


def test_concurrent_processes_never_interleave_or_lose_lines(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), "50"]) for w in range(4)]
    assert [p.wait(60) for p in procs] == [0] * 4
    records = list(read_corrections(tmp_path))
    assert len(records) == 200 and all(r.error is None for r in records)
    assert sorted(r.correction.text.split(" ")[0] for r in records) == sorted(f"w{w}-{i}" for w in range(4) for i in range(50))
    raw = month_file(tmp_path, datetime.now(timezone.utc)).read_bytes()
    assert raw.count(b"\n") == 200 and raw.endswith(b"\n")


# ---------------------------------------------------------------- merge-corrections


def id_in(split: str, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(10_000) if split_for_id(f"{prefix}-{i}") == split)


def row(row_id: str, text: str, **labels: str) -> dict:
    base = {"category": "物流配送", "severity": "三级", "sentiment": "不满", "triggers": [], "source": "authored"}
    return {"id": row_id, "text": text, **base, **labels, "split": split_for_id(row_id)}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    rows = [
        row(id_in("train", "tr"), "快递一周了还没送到，电话也打不通"),
        row(id_in("test", "te"), "请问怎么修改收货地址？", category="咨询建议", sentiment="中性"),
    ]
    path = write_jsonl(tmp_path / "labeled_data" / "complaints" / "authored.jsonl", rows)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "broken", "text": oops not json\n')  # must survive byte for byte
    return tmp_path / "labeled_data"


def correct(data_dir: Path, **fields: object) -> str:
    """A correction as the API stores it: reviewer = the posting key's id, with its scope."""
    key = str(fields.pop("reviewer", "qa"))
    record = {"reviewer": key, "key_id": key, "key_scope": "feedback", **fields}
    return append_correction(data_dir / "corrections", record).correction_id


def rows_by_id(data_dir: Path) -> dict[str, dict]:
    out = {}
    for path in (data_dir / "complaints").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[r["id"]] = r
    return out


def test_merge_updates_train_rows_by_normalized_text_and_keeps_bad_lines(data_dir: Path) -> None:
    train_id = id_in("train", "tr")
    cid = correct(data_dir, text="\u3000 快遞一週了還沒送到，電話也打不通 ", severity="二级", triggers=["repeated_contact"])
    result = merge_corrections(data_dir)
    assert result.updated == {train_id: [cid]}
    updated = rows_by_id(data_dir)[train_id]
    assert updated["severity"] == "二级" and updated["triggers"] == ["repeated_contact"] and updated["category"] == "物流配送"
    assert '{"id": "broken", "text": oops not json\n' in (data_dir / "complaints" / "authored.jsonl").read_text(encoding="utf-8")


def test_merge_never_edits_the_test_split_unless_allowed(data_dir: Path) -> None:
    test_id = id_in("test", "te")
    cid = correct(data_dir, text="请问怎么修改收货地址？", sentiment="不满")
    before = (data_dir / "complaints" / "authored.jsonl").read_bytes()
    result = merge_corrections(data_dir)
    assert not result.updated
    [issue] = result.issues
    assert issue.kind == "test_split" and issue.row_id == test_id and issue.correction_ids == [cid]
    assert (data_dir / "complaints" / "authored.jsonl").read_bytes() == before
    assert merge_corrections(data_dir).issues[0].kind == "test_split", "a skipped correction stays pending"
    assert merge_corrections(data_dir, allow_test_edits=True).updated == {test_id: [cid]}
    assert rows_by_id(data_dir)[test_id]["sentiment"] == "不满"


def test_new_text_becomes_a_valid_row_with_correction_id_source_and_hash_split(data_dir: Path) -> None:
    cid = correct(data_dir, request_id="req-9", text=FRAUD, category="支付与资金安全", severity="一级", sentiment="愤怒")
    result = merge_corrections(data_dir)
    new_id = f"corr-{cid}"
    assert result.added == {new_id: [cid]}
    new = rows_by_id(data_dir)[new_id]
    assert new["source"] == f"correction:{cid}" and new["split"] == split_for_id(new_id) and new["text"] == FRAUD
    assert (data_dir / MERGED_DATA_FILE).exists()
    loaded = load_labeled(data_dir)
    assert new_id in {r.id for r in loaded.rows}
    assert [p.line for p in loaded.problems] == [3], "only the pre-existing broken line is a problem"


def test_partial_labels_for_new_text_and_request_id_only_are_left_pending(data_dir: Path) -> None:
    correct(data_dir, text="全新的一条投诉文本内容", severity="一级")
    correct(data_dir, request_id="req-only", category="物流配送")
    result = merge_corrections(data_dir)
    assert not result.added and result.without_text == 1
    assert [i.kind for i in result.issues] == ["incomplete"]


def test_new_text_that_nearly_duplicates_a_row_is_reported_not_added(data_dir: Path) -> None:
    correct(data_dir, text="快递一周了还没送到，电话也打不通啊", category="物流配送", severity="二级", sentiment="愤怒")
    result = merge_corrections(data_dir)
    assert not result.added
    [issue] = result.issues
    assert issue.kind == "near_duplicate" and issue.row_id == id_in("train", "tr")


def test_conflicting_corrections_are_reported_and_not_applied(data_dir: Path) -> None:
    train_id = id_in("train", "tr")
    text = "快递一周了还没送到，电话也打不通"
    a = correct(data_dir, text=text, severity="一级", reviewer="alice")
    b = correct(data_dir, text=text, severity="二级", sentiment="愤怒", reviewer="bob")
    result = merge_corrections(data_dir)
    assert not result.updated
    [conflict] = result.conflicts
    assert conflict.correction_ids == [a, b] and set(conflict.values) == {"severity"}
    assert {v["reviewer"]: v["value"] for v in conflict.values["severity"]} == {"alice": "一级", "bob": "二级"}
    assert rows_by_id(data_dir)[train_id]["severity"] == "三级"
    settled = merge_corrections(data_dir, latest_wins=True)
    assert settled.updated == {train_id: [a, b]} and [i.kind for i in settled.issues] == ["conflict_settled"]
    assert rows_by_id(data_dir)[train_id]["severity"] == "二级" and rows_by_id(data_dir)[train_id]["sentiment"] == "愤怒"
    agreeing = correct(data_dir, text=text, severity="二级")
    assert merge_corrections(data_dir).unchanged == {train_id: [agreeing]}, "agreeing with the settled value is no conflict"


def test_merge_is_idempotent(data_dir: Path) -> None:
    correct(data_dir, text="快递一周了还没送到，电话也打不通", category="售后服务")
    correct(data_dir, text=FRAUD, category="支付与资金安全", severity="一级", sentiment="愤怒")
    first = merge_corrections(data_dir)
    assert len(first.updated) == 1 and len(first.added) == 1
    snapshot = {p: p.read_bytes() for p in (data_dir / "complaints").glob("*.jsonl")}
    again = merge_corrections(data_dir)
    assert not again.updated and not again.added and again.already_merged == 2 and not again.issues
    assert {p: p.read_bytes() for p in (data_dir / "complaints").glob("*.jsonl")} == snapshot
    # Even with the ledger lost, re-applying changes nothing in the data.
    (data_dir / "corrections" / LEDGER_FILE).unlink()
    lost = merge_corrections(data_dir)
    assert not lost.updated and not lost.added and len(lost.unchanged) == 2
    assert {p: p.read_bytes() for p in (data_dir / "complaints").glob("*.jsonl")} == snapshot


def test_merge_cli_prints_a_table_and_writes_the_report(data_dir: Path, tmp_path: Path) -> None:
    correct(data_dir, text="请问怎么修改收货地址？", sentiment="不满")
    report = tmp_path / "merge_report.json"
    result = CliRunner().invoke(cli_app, ["data", "merge-corrections", "--data-dir", str(data_dir), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "test_split" in result.output
    saved = json.loads(report.read_text(encoding="utf-8"))
    assert saved["counts"]["test_split"] == 1 and saved["issues"][0]["row_id"] == id_in("test", "te")


def test_only_corrections_from_trusted_keys_and_scopes_are_merged(data_dir: Path) -> None:
    train_id = id_in("train", "tr")
    text = "快递一周了还没送到，电话也打不通"
    by_hand = append_correction(data_dir / "corrections", {"text": text, "severity": "一级", "reviewer": "someone"}).correction_id
    result = merge_corrections(data_dir)
    assert not result.updated and [(i.kind, i.correction_ids) for i in result.issues] == [("untrusted", [by_hand])]
    assert "no authenticated key" in result.issues[0].detail
    trusted = correct(data_dir, text=text, severity="二级", reviewer="qa-li")
    other = correct(data_dir, text=FRAUD, category="支付与资金安全", severity="一级", sentiment="愤怒", reviewer="intern")
    only_li = merge_corrections(data_dir, trusted_keys={"qa-li"})
    assert only_li.updated == {train_id: [trusted]} and only_li.by_key == {"qa-li": 1}
    assert sorted(i.correction_ids[0] for i in only_li.issues if i.kind == "untrusted") == sorted([by_hand, other])
    assert rows_by_id(data_dir)[train_id]["severity"] == "二级"
    assert merge_corrections(data_dir, trusted_scopes=("admin",)).added == {}, "intern's key has the feedback scope only"
    assert merge_corrections(data_dir).added == {f"corr-{other}": [other]}


def test_a_failed_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk writes part of a line and then refuses; the file is cut back, the error raised, and
    the next record starts on a clean line (issue 14, item 12)."""
    append_correction(tmp_path, {"text": "第一条", "severity": "二级", "reviewer": "qa"})
    path = month_file(tmp_path, datetime.now(timezone.utc))
    before = path.read_bytes()
    calls = []

    def disk_full(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return corrections.os.write(fd, data[: len(data) // 2])  # a prefix goes out ...
        raise OSError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(corrections, "_write", disk_full)
    with pytest.raises(OSError):
        append_correction(tmp_path, {"text": "第二条" * 100, "severity": "一级", "reviewer": "qa"})
    assert path.read_bytes() == before and len(calls) == 2
    monkeypatch.setattr(corrections, "_write", lambda fd, data: 0)  # a write that makes no progress
    with pytest.raises(OSError):
        append_correction(tmp_path, {"text": "第三条", "severity": "一级", "reviewer": "qa"})
    assert path.read_bytes() == before
    monkeypatch.undo()
    append_correction(tmp_path, {"text": "第四条", "severity": "三级", "reviewer": "qa"})
    records = list(read_corrections(tmp_path))
    assert [r.correction.text for r in records] == ["第一条", "第四条"] and all(r.error is None for r in records)


def test_the_api_answers_507_when_the_write_fails_and_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = TestClient(create_app(app_settings(tmp_path)))
    assert post(c, {"text": FRAUD, "severity": "一级"}).status_code == 201
    before = stored(tmp_path)
    monkeypatch.setattr(corrections, "_write", lambda fd, data: corrections.os.write(fd, data[:10]) and 0)
    r = post(c, {"text": FRAUD, "severity": "二级"})
    assert r.status_code == 507 and r.json()["error_type"] == "storage_error"
    assert stored(tmp_path) == before


def test_merge_cli_merges_only_the_keys_it_is_told_to_trust(data_dir: Path, tmp_path: Path) -> None:
    correct(data_dir, text="快递一周了还没送到，电话也打不通", severity="二级", reviewer="intern")
    args = ["data", "merge-corrections", "--data-dir", str(data_dir), "--report", str(tmp_path / "r.json"), "--trust-key", "qa-li"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved["counts"]["untrusted"] == 1 and saved["counts"]["updated_rows"] == 0 and saved["merged_by_key"] == {}
