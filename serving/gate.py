"""Bounded concurrency for inference: a few requests compute, a bounded number wait, the rest get 429.

Why: onnxruntime already uses every core for one batch, so more parallel runs only add latency and
memory. An unbounded queue would grow without limit under overload; a bounded one sheds load early
with ``Retry-After`` so callers back off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from serving.observability import QUEUED


class QueueFull(Exception):
    pass


class InferenceGate:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self._sem = asyncio.Semaphore(max_concurrent)
        self._max_waiting = max_queue
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._waiting >= self._max_waiting:
            raise QueueFull()
        self._waiting += 1
        QUEUED.set(self._waiting)
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
            QUEUED.set(self._waiting)
        try:
            yield
        finally:
            self._sem.release()
