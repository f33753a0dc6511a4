"""Dynamic batching: many concurrent single-complaint calls share one ONNX run.

Why: on 2 CPU cores one request at a time wastes most of the machine — a batch of 32 complaints costs
far less than 32 runs of one (fewer kernel launches, matrix products big enough to use every SIMD lane).
The batcher is *batch-as-available*: while one batch runs, new calls queue; when it finishes, everything
queued (up to ``max_batch`` texts) goes in the next run. An idle service adds no delay at all (a lone call
runs at once); ``max_wait_ms`` can add a short collection window for bursty traffic.

Pure asyncio + one worker thread, no web framework: the API awaits :meth:`MicroBatcher.predict`, tests
drive it directly. The predictor is looked up per batch (``get_predictor``), so a hot reload takes effect
at the next batch and a batch never mixes two models.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult


class BatcherOverloaded(Exception):
    """More texts are waiting than ``max_queue``: shed the call (the API answers 429 / Retry-After)."""


@dataclass
class _Pending:
    texts: Sequence[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    largest: int = 0

    @property
    def mean_batch(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class MicroBatcher:
    """``await batcher.predict(texts)`` from any number of coroutines; one ONNX run at a time."""

    def __init__(
        self,
        get_predictor: Callable[[], TriagePredictor],
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 512,
    ) -> None:
        self.get_predictor = get_predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: list[_Pending] = []
        self._queued_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-batch")

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    async def predict(self, texts: Sequence[str]) -> list[TriageResult]:
        if not texts:
            return []
        if self._queued_texts + len(texts) > self.max_queue:
            raise BatcherOverloaded(f"{self._queued_texts} texts already waiting (limit {self.max_queue})")
        self._ensure_worker()
        pending = _Pending(texts, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_texts += len(texts)
        self._wakeup.set()
        return await pending.future

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def _take_batch(self) -> list[_Pending]:
        """Whole calls, oldest first, up to ``max_batch`` texts (a call larger than that runs alone)."""
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
            item = self._queue.pop(0)
            if item.future.cancelled():  # the client went away while waiting: do not pay for it
                self._queued_texts -= len(item.texts)
                continue
            batch.append(item)
            size += len(item.texts)
        self._queued_texts -= size
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self.max_wait_s and len(self._queue) == 1 and len(self._queue[0].texts) < self.max_batch:
                    await asyncio.sleep(self.max_wait_s)  # a short window for companions
                batch = self._take_batch()
                if not batch:
                    continue
                texts = [t for item in batch for t in item.texts]
                predictor = self.get_predictor()
                try:
                    results = await loop.run_in_executor(self._executor, predictor.predict, texts, self.max_batch)
                except Exception as err:  # hand the failure to every waiting caller, keep serving
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(err)
                    continue
                self.stats.batches += 1
                self.stats.texts += len(texts)
                self.stats.largest = max(self.stats.largest, len(texts))
                start = 0
                for item in batch:
                    part = results[start : start + len(item.texts)]
                    start += len(item.texts)
                    if not item.future.done():
                        item.future.set_result(part)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
