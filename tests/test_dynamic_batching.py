"""Dynamic batching in the API: concurrent requests share onnxruntime runs, answers equal single ones,
a hot reload applies from the next run, admission (429/503/disconnect) still holds, and batching off is
the old path."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time

import httpx
import pytest
from pydantic import ValidationError

from serving.app import create_app
from serving.gate import ClientGone, QueueFull
from serving.model_holder import SPINNING
from serving.run_plan import RunPlan, plan_runs
from serving.service import batched_predict
from serving.settings import Settings, usable_cores
from triage_model.micro_batching import MicroBatcher
from triage_model.model_dir import read_meta, resolve_model_dir

ADMIN = {"X-API-Key": "admin-secret"}
BASE = [
    "快递三天没到，物流一直不更新",
    "我的银行卡昨晚被盗刷了2980元，不是我本人操作的！再不处理我就报警并且去12315投诉！",
    "请问会员怎么退订？",
    "客服态度太差了，打了三次电话都没人处理，叫你们经理来",
    "买的空气净化器开机两分钟就有焦糊味，申请售后说要等七个工作日，订单号2026112900187",
    "你们的APP一直闪退，登录不了，账户里还有余额",
    "广告说买一送一，结果到手只有一件，这不是虚假宣传吗",
    "退款申请提交了两周还没到账，已经第四次联系你们了，再拖我就发微博",
]
TEXTS = [f"{BASE[i % len(BASE)]}{'（补充说明）' * (i // len(BASE))}" for i in range(32)]
RECEIVED = "2026-11-30T09:00:00+08:00"  # fixed, so the SLA deadlines of two calls compare equal


def comparable(body: dict) -> dict:
    """A response without what differs between two calls of the same complaint."""
    return {k: v for k, v in body.items() if k != "request_id"}


def assert_same_answer(got: dict, want: dict) -> None:
    got, want = comparable(got), comparable(want)
    for head in ("category", "severity", "sentiment"):
        assert got[head]["label"] == want[head]["label"] and got[head]["runner_up"] == want[head]["runner_up"]
        assert got[head]["score"] == pytest.approx(want[head]["score"], abs=2e-3)  # padding in a shared run: float noise only
    assert got["escalation"] == want["escalation"] and got["truncated"] == want["truncated"]
    assert got["model_version"] == want["model_version"]


async def serve(app, work):
    """Run ``work(client)`` against ``app`` with its lifespan (ASGI transport, no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://triage.test", timeout=120) as client:
            return await work(client)


def post(client, text: str):
    return client.post("/v1/triage", json={"text": text, "received_at": RECEIVED})


def test_settings_defaults_size_the_gate_for_batching():
    on = Settings()
    assert on.dynamic_batching and on.batch_max_wait_ms == 0
    assert on.max_concurrent == on.batch_max_texts  # a batch's worth of requests past the gate
    assert Settings(dynamic_batching=False).max_concurrent == 2  # exactly the old default
    assert Settings(max_concurrent=5).max_concurrent == 5
    assert Settings(batch_max_texts=8).max_concurrent == 8
    assert on.ort_allow_spinning is False and Settings(dynamic_batching=False).ort_allow_spinning is None  # None: onnxruntime's own
    assert Settings(ort_allow_spinning=True).ort_allow_spinning is True
    assert on.batch_concurrent_runs == "auto" and on.threads is None  # decided per loaded model (serving.run_plan)
    assert Settings(batch_concurrent_runs=2).batch_concurrent_runs == 2
    with pytest.raises(ValidationError):
        Settings(batch_concurrent_runs=0)
    with pytest.raises(ValidationError):
        Settings(batch_concurrent_runs="many")


@pytest.mark.parametrize(
    ("bundled", "setting", "threads", "cores", "want"),
    [
        ("student", "auto", None, 2, RunPlan(2, 1)),  # 4 layers: two single-threaded runs (measured +18–27 %)
        ("default", "auto", None, 2, RunPlan(1, None)),  # 12 layers: one run on every core (its lone request needs both)
        ("student", "auto", None, 1, RunPlan(1, None)),  # one core: nothing to share
        ("default", 2, None, 4, RunPlan(2, 2)),  # a number overrides auto; the runs share the cores
        ("student", 2, 3, 2, RunPlan(2, 3)),  # explicit threads always win
    ],
)
def test_the_run_plan_follows_the_loaded_model(bundled, setting, threads, cores, want):
    meta = read_meta(resolve_model_dir(bundled))
    assert plan_runs(meta, setting, threads, cores) == want
    assert plan_runs(meta, setting, threads, cores, batching=False) == RunPlan(1, threads)


def test_auto_runs_follow_a_hot_reload_from_the_teacher_to_the_student():
    """One process, TRIAGE_BATCH_CONCURRENT_RUNS=auto: the batcher's limit and the session's threads change with the model."""
    app = create_app(Settings(model_dir=resolve_model_dir("default")))
    cores = usable_cores()

    async def work(client):
        before = (await client.get("/v1/model")).json()
        app.state.holder.load(resolve_model_dir("student"))
        after = (await client.get("/v1/model")).json()
        answer = await post(client, TEXTS[0])
        return before, after, app.state.batcher.concurrent_runs, answer

    before, after, runs_now, answer = asyncio.run(serve(app, work))
    assert (before["concurrent_runs"], before["intra_op_threads"]) == (1, None)
    assert (after["concurrent_runs"], after["intra_op_threads"]) == ((2, cores // 2) if cores >= 2 else (1, None))
    assert runs_now == after["concurrent_runs"] and answer.status_code == 200
    assert answer.json()["model_version"] == after["model_version"] != before["model_version"]


def test_two_concurrent_runs_give_every_request_its_single_request_answer(served_model_dir):
    """``batch_concurrent_runs=2``: runs overlap in two threads of one session; no answer changes."""
    app = create_app(Settings(model_dir=served_model_dir, batch_concurrent_runs=2, threads=1))

    async def work(client):
        assert app.state.batcher.concurrent_runs == 2
        assert app.state.holder.predictor.session.get_session_options().intra_op_num_threads == 1
        together = await asyncio.gather(*(post(client, t) for t in TEXTS))
        alone = [await post(client, t) for t in TEXTS[:8]]
        return together, alone

    together, alone = asyncio.run(serve(app, work))
    assert [r.status_code for r in together] == [200] * 32
    for got, want in zip(together, alone, strict=False):
        assert_same_answer(got.json(), want.json())


def test_32_concurrent_requests_share_few_onnx_runs_and_get_the_single_request_answers(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir))

    async def work(client):
        batcher = app.state.batcher
        assert isinstance(batcher, MicroBatcher)
        assert app.state.holder.predictor.session.get_session_options().get_session_config_entry(SPINNING) == "0"
        together = await asyncio.gather(*(post(client, t) for t in TEXTS))
        runs, onnx_runs, texts = batcher.stats.batches, batcher.stats.onnx_runs, batcher.stats.texts
        alone = [await post(client, t) for t in TEXTS]  # one at a time: each is its own run
        batched_call = await client.post(
            "/v1/triage/batch", json={"items": [{"id": str(i), "text": t, "received_at": RECEIVED} for i, t in enumerate(TEXTS)]}
        )
        return together, alone, batched_call, runs, onnx_runs, texts, batcher.stats.batches

    together, alone, batched_call, runs, onnx_runs, texts, runs_after = asyncio.run(serve(app, work))
    assert [r.status_code for r in together] == [200] * 32
    assert texts == 32 and runs <= 6, f"32 concurrent requests took {runs} shared batches"
    assert onnx_runs <= 16, f"32 concurrent requests took {onnx_runs} onnxruntime runs"  # a batch runs as a few length groups
    assert runs_after == runs + 32 + 1  # each lone request ran alone; the /batch call is one run
    for got, want in zip(together, alone, strict=True):
        assert_same_answer(got.json(), want.json())
    assert batched_call.status_code == 200
    for got, want in zip(batched_call.json()["results"], alone, strict=True):
        assert_same_answer({k: v for k, v in got.items() if k != "id"}, want.json())
    assert app.state.batcher is None  # closed at shutdown


def test_batching_off_is_the_old_path(served_model_dir):
    app = create_app(Settings(model_dir=served_model_dir, dynamic_batching=False))

    async def work(client):
        assert app.state.batcher is None and app.state.gate.max_concurrent == 2
        assert not app.state.holder.session_config  # the session exactly as from_pretrained made it
        return await asyncio.gather(*(post(client, t) for t in TEXTS[:8]))

    bodies = [r.json() for r in asyncio.run(serve(app, work))]
    on = create_app(Settings(model_dir=served_model_dir))
    batched = [r.json() for r in asyncio.run(serve(on, lambda c: asyncio.gather(*(post(c, t) for t in TEXTS[:8]))))]
    for got, want in zip(batched, bodies, strict=True):
        assert_same_answer(got, want)


@pytest.fixture()
def reload_setup(tmp_path, served_model_dir):
    root = tmp_path / "models"
    dst = root / "candidate"
    shutil.copytree(served_model_dir, dst, ignore=shutil.ignore_patterns("model.onnx"))
    meta = json.loads((dst / "triage_config.json").read_text(encoding="utf-8"))
    meta["model_version"] = "candidate-v2"
    (dst / "triage_config.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return Settings(model_dir=served_model_dir, admin_keys=["admin-secret"], models_root=root, queue_timeout_ms=60_000)


def test_a_hot_reload_during_batching_applies_from_the_next_run_and_drops_nothing(reload_setup):
    app = create_app(reload_setup)

    async def work(client):
        before = app.state.holder.predictor.version
        reload_done = asyncio.Event()

        async def waves() -> list:
            out = []
            while not reload_done.is_set():  # shared runs for the whole reload, and one wave after it
                out += await wave()
            return out + await wave()

        def wave():
            return asyncio.gather(
                *(post(client, t) for t in TEXTS[:16]),
                client.post("/v1/triage/batch", json={"items": [{"text": t} for t in TEXTS[:8]]}),
            )

        traffic = asyncio.create_task(waves())
        await asyncio.sleep(0.05)
        reloaded = await client.post("/v1/admin/reload", json={"model_dir": "candidate"}, headers=ADMIN)
        reload_done.set()
        during = await traffic
        after = await post(client, TEXTS[0])
        return before, reloaded, during, after

    before, reloaded, during, after = asyncio.run(serve(app, work))
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["model_version"] == "candidate-v2"
    assert all(r.status_code == 200 for r in during)
    versions = set()
    for r in during:
        body = r.json()
        if "results" in body:  # one call = one run = one model
            assert {res["model_version"] for res in body["results"]} == {body["model_version"]}
        versions.add(body["model_version"])
    assert versions == {before, "candidate-v2"}  # served by the old model, then by the new one, nothing dropped
    assert after.json()["model_version"] == "candidate-v2"


def test_a_full_batcher_queue_is_429_with_retry_after(served_model_dir, monkeypatch):
    """A computes (slowed to 1 s); B waits in the batcher's queue (1 text: full); C is refused with 429."""
    settings = Settings(model_dir=served_model_dir, batch_max_queued_texts=1, max_concurrent=4)
    app = create_app(settings)
    started = threading.Event()

    async def work(client):
        predictor = app.state.holder.predictor
        real = predictor.predict

        def slow(*args, **kwargs):
            started.set()
            time.sleep(1.0)
            return real(*args, **kwargs)

        monkeypatch.setattr(predictor, "predict", slow)
        a = asyncio.create_task(post(client, "A：快递三天没更新"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        b = asyncio.create_task(post(client, "B：快递三天没更新"))
        await asyncio.sleep(0.1)
        c = await post(client, "C：快递三天没更新")
        return await a, await b, c

    a, b, c = asyncio.run(serve(app, work))
    assert a.status_code == 200 and b.status_code == 200
    assert c.status_code == 429 and c.json()["error_type"] == "overloaded" and int(c.headers["Retry-After"]) >= 1


class SlowEcho:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: list[str] = []

    def predict(self, texts, batch_size=32):
        self.seen += list(texts)
        time.sleep(self.delay)
        return [f"result:{t}" for t in texts]


def test_a_client_that_leaves_while_its_texts_wait_for_a_run_is_dropped_unrun():
    fake = SlowEcho(0.3)

    async def main():
        batcher = MicroBatcher(lambda: fake)
        first = asyncio.create_task(batched_predict(batcher, ["running"]))
        await asyncio.sleep(0.05)  # "running" is in its run; the next text waits behind it

        async def leaves() -> None:
            await asyncio.sleep(0.05)

        with pytest.raises(ClientGone):
            await batched_predict(batcher, ["abandoned"], leaves)
        stays = await batched_predict(batcher, ["stays"], lambda: asyncio.Event().wait())
        assert await first == ["result:running"]
        await batcher.close()
        return stays

    assert asyncio.run(main()) == ["result:stays"]
    assert fake.seen == ["running", "stays"]


def test_batcher_overload_becomes_queue_full_with_the_batchers_retry_after():
    fake = SlowEcho(0.2)

    async def main():
        batcher = MicroBatcher(lambda: fake, max_batch=2, max_queue=2)
        running = asyncio.create_task(batched_predict(batcher, ["a", "b"]))
        await asyncio.sleep(0.02)
        waiting = asyncio.create_task(batched_predict(batcher, ["c", "d"]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await batched_predict(batcher, ["e"])
        assert refused.value.retry_after >= 1
        await asyncio.gather(running, waiting)
        await batcher.close()

    asyncio.run(main())
