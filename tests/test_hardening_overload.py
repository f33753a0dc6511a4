"""Issue 14, item 8: overload sheds (429 queue full, 503 past the queue deadline, both with
Retry-After) instead of queueing for 25 s, and a request whose client left is dropped unseen.

The gate is tested directly (asyncio), then through the app with a slowed-down model. The live-server
checks (/healthz under load, a real disconnect) are in test_hardening_live.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.gate import ClientGone, InferenceGate, QueueFull, QueueTimeout
from serving.settings import Settings


async def hold(gate: InferenceGate, release: asyncio.Event) -> None:
    async with gate.slot():
        await release.wait()


def test_a_full_queue_refuses_at_once_with_retry_after():
    async def run() -> None:
        gate = InferenceGate(max_concurrent=1, max_queue=1, timeout_s=5)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        waiter = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0.01)
        assert gate.waiting == 1
        start = time.perf_counter()
        with pytest.raises(QueueFull) as refused:
            async with gate.slot():
                pass
        assert time.perf_counter() - start < 1.0 and refused.value.retry_after >= 1  # at once, not after timeout_s=5
        release.set()
        await asyncio.gather(holder, waiter)

    asyncio.run(run())


def test_a_request_that_cannot_start_before_the_deadline_gets_queue_timeout_and_frees_its_place():
    async def run() -> None:
        gate = InferenceGate(max_concurrent=1, max_queue=4, timeout_s=0.1)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(QueueTimeout) as late:
            async with gate.slot():
                pass
        assert 0.09 < time.perf_counter() - start < 1.0 and late.value.retry_after >= 1
        assert gate.waiting == 0
        release.set()
        await holder
        async with gate.slot():  # the slot was not leaked by the timed-out waiter
            assert gate._sem.locked()
        assert not gate._sem.locked()

    asyncio.run(run())


def test_a_waiting_request_whose_client_leaves_is_dropped_without_running():
    async def run() -> None:
        gate = InferenceGate(max_concurrent=1, max_queue=4, timeout_s=5)
        release = asyncio.Event()
        holder = asyncio.create_task(hold(gate, release))
        await asyncio.sleep(0.01)
        ran = []

        async def client_leaves() -> None:
            await asyncio.sleep(0.05)

        start = time.perf_counter()
        with pytest.raises(ClientGone):
            async with gate.slot(client_leaves):
                ran.append(1)
        assert ran == [] and time.perf_counter() - start < 1.0 and gate.waiting == 0
        release.set()
        await holder
        assert not gate._sem.locked()

    asyncio.run(run())


@pytest.mark.parametrize("dynamic_batching", [True, False], ids=["batched", "unbatched"])
def test_through_the_app_overload_gets_429_and_503_with_retry_after(served_model_dir, monkeypatch, dynamic_batching):
    """One slot, one place in the queue, a 0.6 s deadline, a model that takes 2 s for the first call:
    A computes; B waits and passes the deadline (503); C finds the queue full (429); A still succeeds.
    The same with and without dynamic batching (the gate stands in front of both)."""
    first = threading.Event()
    settings = Settings(model_dir=served_model_dir, max_concurrent=1, max_queue=1, queue_timeout_ms=600, dynamic_batching=dynamic_batching)
    results: dict[str, object] = {}
    with TestClient(create_app(settings)) as c:
        predictor = c.app.state.holder.predictor  # slowed after start-up (the canary check at load also predicts)
        real = predictor.predict

        def slow_first(*args, **kwargs):
            if not first.is_set():
                first.set()
                time.sleep(2.0)
            return real(*args, **kwargs)

        monkeypatch.setattr(predictor, "predict", slow_first)

        def call(name: str) -> None:
            results[name] = c.post("/v1/triage", json={"text": f"{name}：快递三天没更新"})

        threads = {name: threading.Thread(target=call, args=(name,)) for name in "ABC"}
        threads["A"].start()
        assert first.wait(10)
        threads["B"].start()
        time.sleep(0.2)
        threads["C"].start()
        for t in threads.values():
            t.join(30)
        healthy = c.get("/healthz")
    a, b, cc = results["A"], results["B"], results["C"]
    assert a.status_code == 200
    assert b.status_code == 503 and b.json()["error_type"] == "overloaded" and int(b.headers["Retry-After"]) >= 1
    assert cc.status_code == 429 and cc.json()["error_type"] == "overloaded" and int(cc.headers["Retry-After"]) >= 1
    assert healthy.status_code == 200
