"""Bounded concurrency for inference: a few requests compute, a bounded number wait a bounded time.

Why: onnxruntime already uses every core for one run, so more parallel runs only add latency and
memory. Under overload a queue that never sheds makes everyone slow (64 clients for 30 s gave a 24 s
p50 and computed answers for clients that had long hung up). So a request

* that finds ``max_queue`` others waiting gets **429** at once (``QueueFull``);
* that cannot start within ``timeout_s`` gets **503** (``QueueTimeout``);
* whose client disconnects while it waits is dropped without computing (``ClientGone``).

Both refusals carry ``retry_after``: the seconds the requests ahead need at the measured service time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from serving.observability import QUEUED, SHED


class Shed(Exception):
    """The request was not computed."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class QueueFull(Shed):
    pass


class QueueTimeout(Shed):
    pass


class ClientGone(Shed):
    pass


class InferenceGate:
    def __init__(self, max_concurrent: int, max_queue: int, timeout_s: float = 1.5) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._sem = asyncio.Semaphore(max_concurrent)
        self._waiting = 0
        self._service_s = 0.05  # moving average of the time one request holds a slot

    @property
    def waiting(self) -> int:
        return self._waiting

    def retry_after(self) -> int:
        """Whole seconds until the queue ahead would have drained at the recent service time."""
        return max(1, math.ceil((self._waiting + 1) * self._service_s / self.max_concurrent))

    async def _acquire(self, disconnected: Callable[[], Awaitable[object]] | None) -> None:
        acquire = asyncio.ensure_future(self._sem.acquire())
        gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        self._waiting += 1
        QUEUED.set(self._waiting)
        try:
            await asyncio.wait([t for t in (acquire, gone) if t is not None], timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting -= 1
            QUEUED.set(self._waiting)
            if gone is not None and not gone.done():
                gone.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await gone
        client_left = gone is not None and gone.done() and not gone.cancelled() and gone.exception() is None
        if acquire.done() and not acquire.cancelled() and not client_left:
            return
        if not acquire.done():
            acquire.cancel()
        with suppress(asyncio.CancelledError):
            await acquire
        if acquire.done() and not acquire.cancelled():  # acquired in the same instant: give it back
            self._sem.release()
        if client_left:
            SHED.labels(reason="client_gone").inc()
            raise ClientGone()
        SHED.labels(reason="queue_timeout").inc()
        raise QueueTimeout(self.retry_after())

    @asynccontextmanager
    async def slot(self, disconnected: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[None]:
        """Hold one inference slot. ``disconnected`` returns when the client has gone (the request's
        ``http.disconnect``); while waiting, that drops the request."""
        if self._sem.locked() and self._waiting >= self.max_queue:
            SHED.labels(reason="queue_full").inc()
            raise QueueFull(self.retry_after())
        await self._acquire(disconnected)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - start)
            self._sem.release()
