"""Serving with more than one worker: what is shared across the worker processes of one server.

Fast tier: the pieces on their own (the parent's set-up of the shared directories, the reload marker,
corrections appended by several processes at once). Slow tier: ``triage serve --workers 2`` on a free
port with the shipped model; requests spread over both workers, and then

* ``/metrics`` (whichever worker answers) counts every worker's requests (prometheus multiprocess mode),
* ``GET /v1/alerts`` counts every worker's predictions (``TRIAGE_ALERT_BACKEND=redis``; skipped, saying
  why, without a ``redis-server`` binary: an in-process fake cannot be shared by two processes),
* a reload sent to one worker reaches both (``GET /v1/model`` answers with each worker's pid and version).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from serving.reload_marker import ReloadMarker
from serving.workers import MULTIPROC_ENV, RELOAD_MARKER_ENV, prepare_workers
from tests.conftest import REPO, free_port, start_redis
from triage_model.corrections import append_correction, read_corrections

ADMIN = {"X-API-Key": "admin-key"}


# -- fast: the pieces ------------------------------------------------------------------------------


def test_prepare_workers_sets_and_empties_the_shared_directories(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    (metrics / "gauge_livesum_123.db").write_bytes(b"stale")
    (metrics / "notes.txt").write_text("kept")
    env: dict[str, str] = {}
    run_dir = prepare_workers(2, metrics, env)
    try:
        assert env[MULTIPROC_ENV] == str(metrics.resolve())
        assert sorted(p.name for p in metrics.iterdir()) == ["notes.txt"]  # a previous run's counts would add up
        assert Path(env[RELOAD_MARKER_ENV]).parent == run_dir
    finally:
        shutil.rmtree(run_dir)
    assert prepare_workers(1, None, one := {}) is None and one == {}  # one worker: unchanged


def test_a_reload_marker_reaches_the_other_workers_once(tmp_path):
    path = tmp_path / "reload.json"
    writer, reader = ReloadMarker(path), ReloadMarker(path)
    assert reader.pending() is None  # nothing announced yet
    writer.announce(tmp_path / "v2", "v2")
    assert writer.pending() is None  # the worker that reloaded does not load again
    got = reader.pending()
    assert got["model_dir"] == str((tmp_path / "v2").resolve()) and got["model_version"] == "v2" and got["pid"] == os.getpid()
    assert reader.pending() is None  # acted on once
    writer.announce(None, "v1")
    assert reader.pending()["model_dir"] is None  # None: the configured model directory
    late = ReloadMarker(path)  # a worker started after the reload follows it on its first look
    assert late.pending()["model_version"] == "v1"


def _append_many(folder: str, worker: int, n: int) -> None:
    for i in range(n):
        # 30 KB lines: far over PIPE_BUF, so only the lock keeps concurrent appends whole
        append_correction(Path(folder), {"text": f"{worker}-{i} " + "投诉" * 5000, "category": "物流配送", "reviewer": f"w{worker}"})


def test_corrections_from_several_processes_are_whole_lines(tmp_path):
    """Each worker writes the feedback file itself; a flock around one O_APPEND write per line keeps
    concurrent writers from interleaving (triage_model.corrections.append_line)."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = list(read_corrections(tmp_path))
    assert [s.error for s in lines if s.error] == []
    assert len(lines) == 100 and len({s.correction.correction_id for s in lines}) == 100
    assert Counter(s.correction.reviewer for s in lines) == {f"w{w}": 25 for w in range(4)}


# -- slow: two workers on the wire -----------------------------------------------------------------


def model_answer(base: str) -> dict:
    """GET /v1/model on a fresh connection, so any worker may take it."""
    return httpx.get(f"{base}/v1/model", timeout=30).json()


def versions_by_pid(base: str, tries: int = 16) -> dict[int, str]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: model_answer(base), range(tries)))
    return {a["worker_pid"]: a["model_version"] for a in answers}


class Server:
    def __init__(self, base: str, proc: subprocess.Popen, metrics_dir: Path, models_root: Path, redis: bool, log: Path) -> None:
        self.base, self.proc, self.metrics_dir, self.models_root, self.redis, self.log = base, proc, metrics_dir, models_root, redis, log
        self.pids: set[int] = set()
        self.sent = 0


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_model_dir):
    """``triage serve --workers 2`` with a models root, a fast reload poll and, when redis-server is
    installed, shared volume alerts; ready once both workers have answered."""
    folder = tmp_path_factory.mktemp("multi_worker")
    models_root = folder / "models"
    models_root.mkdir()
    redis = start_redis(folder)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "PROMETHEUS_"))}
    env |= {
        "TRIAGE_MODEL_DIR": str(served_model_dir),
        "TRIAGE_MODELS_ROOT": str(models_root),
        "TRIAGE_ADMIN_KEYS": "ops:admin-key",
        "TRIAGE_THREADS": "1",
        "TRIAGE_RELOAD_POLL_S": "0.5",
        "TRIAGE_QUEUE_TIMEOUT_MS": "60000",
    }
    if redis:
        env |= {"TRIAGE_ALERT_BACKEND": "redis", "TRIAGE_REDIS_URL": redis[0], "TRIAGE_ALERT_REDIS_PREFIX": f"t{time.time_ns()}"}
    metrics_dir = folder / "metrics"
    cmd = [sys.executable, "-m", "triage_cli.main", "serve", "--workers", "2", "--port", str(port), "--metrics-dir", str(metrics_dir)]
    log = folder / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", proc, metrics_dir, models_root, redis is not None, log)
    try:
        deadline = time.monotonic() + 240
        while len(srv.pids) < 2:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"two workers did not come up (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
            try:
                srv.pids |= set(versions_by_pid(srv.base, 4))
            except (httpx.TransportError, json.JSONDecodeError, KeyError):
                time.sleep(0.5)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the server this fixture started
            proc.wait(10)
        if redis:
            redis[1].terminate()
            redis[1].wait(10)


TEXTS = [
    "快递三天了还没送到，客服也联系不上",
    "银行卡被莫名扣款2980元，不是我本人操作",
    "手机买回来第二天就黑屏了，要求退货",
    "套餐被偷偷升级多扣了话费",
]


def counts_per_worker(metrics_dir: Path, name: str = "triage_predictions_total", **labels: str) -> dict[int, float]:
    """Each worker's own count of ``name`` from its file in the multiprocess directory (before merging)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        total = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        out[pid] = total
    return out


@pytest.fixture(scope="module")
def traffic(server):
    """40 triage requests on fresh connections, 8 at a time; more rounds of 20 until both workers have
    served some (the kernel hands each connection to one worker)."""

    def triage(i: int) -> None:
        resp = httpx.post(f"{server.base}/v1/triage", json={"text": f"{TEXTS[i % len(TEXTS)]}（第{i}次）"}, timeout=120)
        assert resp.status_code == 200, resp.text

    batch = 40
    for _ in range(6):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(triage, range(server.sent, server.sent + batch)))
        server.sent += batch
        served = counts_per_worker(server.metrics_dir, head="category")
        if sum(1 for pid in server.pids if served.get(pid, 0) > 0) == 2:
            return served
        batch = 20
    pytest.fail(f"every request went to one worker: {served}")


def scrape(base: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", headers=ADMIN, timeout=30).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.slow
def test_two_workers_answer_with_their_pids(server):
    assert len(server.pids) == 2 and server.proc.pid not in server.pids


@pytest.mark.slow
def test_metrics_count_the_requests_of_every_worker(server, traffic):
    assert sum(traffic.values()) == server.sent and all(traffic[pid] > 0 for pid in server.pids)  # both served, each its share
    for _ in range(6):  # fresh connections: either worker answers, and each reports the total
        families = scrape(server.base)
        predicted = sum(s.value for s in families["triage_predictions"] if s.name.endswith("_total") and s.labels["head"] == "category")
        served = sum(
            s.value
            for s in families["triage_request_latency_seconds"]
            if s.name.endswith("_count") and s.labels["route"] == "/v1/triage" and s.labels["status"] == "200"
        )
        assert predicted == served == server.sent
        live = {int(s.labels["pid"]) for s in families["triage_worker_model"] if s.value == 1}
        assert live == server.pids  # the served version, one series per live worker


@pytest.mark.slow
def test_volume_alert_counts_are_shared_by_the_workers(server, traffic):
    if not server.redis:
        pytest.skip("redis-server binary not found (apt-get install redis-server): shared alert counts need a real Redis")
    for _ in range(6):
        snapshot = httpx.get(f"{server.base}/v1/alerts", timeout=30).json()
        assert sum(c["window_count"] for c in snapshot["categories"]) == server.sent


@pytest.mark.slow
def test_a_reload_sent_to_one_worker_reaches_every_worker(server, served_model_dir):
    dst = server.models_root / "v2"
    shutil.copytree(served_model_dir, dst, ignore=shutil.ignore_patterns("model.onnx"))
    meta = json.loads((dst / "triage_config.json").read_text(encoding="utf-8"))
    meta["model_version"] = "multi-worker-v2"
    (dst / "triage_config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    resp = httpx.post(f"{server.base}/v1/admin/reload", json={"model_dir": "v2"}, headers=ADMIN, timeout=120)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == "multi-worker-v2"
    deadline = time.monotonic() + 90
    seen: dict[int, str] = {}
    while time.monotonic() < deadline:
        seen |= versions_by_pid(server.base)
        if set(seen) >= server.pids and all(seen[pid] == "multi-worker-v2" for pid in server.pids):
            break
        time.sleep(0.5)
    assert {pid: seen.get(pid) for pid in server.pids} == dict.fromkeys(server.pids, "multi-worker-v2")
