"""Dynamic batching: many concurrent single-complaint calls share one ONNX run.

Why: on 2 CPU cores one request at a time wastes most of the machine — a batch of 32 complaints costs
far less than 32 runs of one (fewer kernel launches, matrix products big enough to use every SIMD lane).
The batcher is *batch-as-available*: while one batch runs, new calls queue; when it finishes, everything
queued (up to ``max_batch`` texts) goes in the next run. An idle service adds no delay at all (a lone call
runs at once); ``max_wait_ms`` can add a short collection window for bursty traffic.

Inside a batch the texts are grouped by length before they reach onnxruntime (:func:`length_groups`):
concurrent requests arrive in no particular order, and one run of a 20-character and a 400-character
complaint pads the short one to the long one's 128 tokens. On 2 cores that padding cost a third of the
throughput (mixed runs of 32: ~30 texts/s; the same texts grouped: ~45/s), far more than what larger runs
gain (batch 32 vs 4 of equal lengths: 0–10 %).

Pure asyncio + one worker thread, no web framework: the API awaits :meth:`MicroBatcher.predict`, tests
drive it directly. The predictor is looked up per batch (``get_predictor``), so a hot reload takes effect
at the next batch and a batch never mixes two models.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult

MAX_CONCURRENT_RUNS = 8
"""Most onnxruntime runs one batcher keeps in flight (its worker threads start only as runs need them)."""


def length_groups(lengths: Sequence[int], cap: int, max_group: int, slack: float = 0.25) -> list[list[int]]:
    """Indices of ``lengths`` in runs of similar length: shortest first, a run grows while padding every
    member to its longest adds at most ``slack`` of the real work and it holds at most ``max_group``.
    Lengths are capped at ``cap`` (the model reads at most that many tokens, so longer texts cost the same)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    group: list[int] = []
    total = 0
    for i in order:
        size = max(1, min(lengths[i], cap))
        if group and (len(group) >= max_group or size * (len(group) + 1) > (1 + slack) * (total + size)):
            groups.append(group)
            group, total = [], 0
        group.append(i)
        total += size
    if group:
        groups.append(group)
    return groups


def text_groups(predictor: TriagePredictor, texts: Sequence[str], max_group: int) -> list[list[int]]:
    """:func:`length_groups` of ``texts`` by characters, capped at the model's token limit (a Chinese
    character is about one token; the predictor normalises and tokenizes later, once)."""
    cap = getattr(getattr(predictor, "meta", None), "max_length", None) or 128
    return length_groups([len(t) for t in texts], cap, max_group)


def predict_groups(predictor: TriagePredictor, texts: Sequence[str], groups: list[list[int]]) -> list[TriageResult]:
    """``predictor.predict(texts)`` in input order, one onnxruntime run per group."""
    results: list[TriageResult | None] = [None] * len(texts)
    for group in groups:
        for i, res in zip(group, predictor.predict([texts[i] for i in group], len(group)), strict=True):
            results[i] = res
    return results  # type: ignore[return-value]


class BatcherOverloaded(Exception):
    """More texts are waiting than ``max_queue``: shed the call (the API answers 429 / Retry-After)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatcherClosed(RuntimeError):
    """The batcher was closed (shutdown) before this call's batch ran."""


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
    onnx_runs: int = 0
    """onnxruntime runs: a batch runs as one or more length groups."""
    busy_s: float = 0.0
    """Seconds spent in predictor runs (successful ones)."""

    @property
    def mean_batch(self) -> float:
        return self.texts / self.batches if self.batches else 0.0


class MicroBatcher:
    """``await batcher.predict(texts)`` from any number of coroutines; one ONNX run at a time (or
    ``concurrent_runs``)."""

    def __init__(
        self,
        get_predictor: Callable[[], TriagePredictor],
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 512,
        on_batch: Callable[[int, float], None] | None = None,
        concurrent_runs: int | Callable[[], int] = 1,
    ) -> None:
        """``on_batch(texts, seconds)`` is called on the event loop after each successful run (metrics).

        ``concurrent_runs``: onnxruntime runs in flight at once, each in its own worker thread (onnxruntime's
        ``run`` is thread-safe). One run using every core suits long batches; on few cores small batches
        parallelise poorly inside one run, and two single-threaded runs side by side may keep both cores
        busier — give the session ``cores // concurrent_runs`` intra-op threads. A callable is asked before
        every run (at most ``MAX_CONCURRENT_RUNS``): the served model decides, and a hot reload may change it."""
        if not callable(concurrent_runs) and not 1 <= concurrent_runs <= MAX_CONCURRENT_RUNS:
            raise ValueError(f"concurrent_runs must be 1..{MAX_CONCURRENT_RUNS}")
        self.get_predictor = get_predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._batch_s = 0.05  # moving average of one run's seconds (for Retry-After)
        self._closed = False
        self._running: list[list[_Pending]] = []  # the batches of the runs in flight
        self._queue: list[_Pending] = []
        self._queued_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._runs_limit = concurrent_runs if callable(concurrent_runs) else (lambda: concurrent_runs)
        self._slot_freed: asyncio.Event | None = None
        workers = MAX_CONCURRENT_RUNS if callable(concurrent_runs) else concurrent_runs  # threads start only when used
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnx-batch")

    @property
    def concurrent_runs(self) -> int:
        """Runs allowed in flight now (the served model's plan when given a callable)."""
        return max(1, min(MAX_CONCURRENT_RUNS, int(self._runs_limit())))

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def retry_after(self) -> int:
        """Whole seconds until the texts waiting now would have run, at the recent time per run."""
        return max(1, math.ceil((self._queued_texts / self.max_batch / self.concurrent_runs + 1) * self._batch_s))

    async def predict(self, texts: Sequence[str]) -> list[TriageResult]:
        """Results for ``texts``, in order, from one run shared with whatever else is waiting. Cancelling
        the awaiting task before its batch starts takes the texts out of the queue unrun."""
        if not texts:
            return []
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if self._queued_texts + len(texts) > self.max_queue:
            raise BatcherOverloaded(f"{self._queued_texts} texts already waiting (limit {self.max_queue})", self.retry_after())
        self._ensure_worker()
        pending = _Pending(texts, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_texts += len(texts)
        self._wakeup.set()
        return await pending.future

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._slot_freed = asyncio.Event()  # made with the worker, in the loop that serves
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
        """Take batches as run slots free up: with one slot, the next batch is whatever queued while the
        previous run computed (batch-as-available); with more, up to ``concurrent_runs`` runs overlap."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                while len(self._tasks) >= self.concurrent_runs:  # every run slot taken: wait for one to end
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                if self.max_wait_s and len(self._queue) == 1 and len(self._queue[0].texts) < self.max_batch:
                    await asyncio.sleep(self.max_wait_s)  # a short window for companions
                batch = self._take_batch()
                if not batch:
                    continue
                task = asyncio.get_running_loop().create_task(self._execute(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        """One onnxruntime run (one or more length groups) for ``batch``; hands each call its results or
        the run's exception, and frees the run slot."""
        texts = [t for item in batch for t in item.texts]
        self._running.append(batch)
        start = time.perf_counter()
        try:
            predictor = self.get_predictor()  # per batch: a hot reload applies from the next one
            groups = text_groups(predictor, texts, self.max_batch)
            results = await asyncio.get_running_loop().run_in_executor(self._executor, predict_groups, predictor, texts, groups)
        except Exception as err:  # hand the failure to every waiting caller, keep serving
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        finally:
            self._running.remove(batch)
            self._tasks.discard(asyncio.current_task())  # the slot is free now, not after the done callback
            self._slot_freed.set()
        elapsed = time.perf_counter() - start
        self._batch_s = 0.8 * self._batch_s + 0.2 * elapsed
        self.stats.batches += 1
        self.stats.onnx_runs += len(groups)
        self.stats.texts += len(texts)
        self.stats.largest = max(self.stats.largest, len(texts))
        self.stats.busy_s += elapsed
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # metrics never fail a batch
                self.on_batch(len(texts), elapsed)
        start = 0
        for item in batch:
            part = results[start : start + len(item.texts)]
            start += len(item.texts)
            if not item.future.done():
                item.future.set_result(part)

    async def close(self) -> None:
        """Stop the worker; calls still waiting (or in the run cut short) fail with ``BatcherClosed``."""
        self._closed = True
        unanswered = [item for batch in self._running for item in batch] + self._queue  # before the cancelled runs forget them
        for task in [self._worker, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for item in unanswered:
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the batcher was closed before this call's run finished"))
        self._running, self._queue, self._queued_texts = [], [], 0
        self._executor.shutdown(wait=False, cancel_futures=True)
