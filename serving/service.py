"""The triage use case behind the routes: limits → gate → predict (off the event loop) → escalation → counters.

Predict has two paths (``TRIAGE_DYNAMIC_BATCHING``): by default the request's texts go to the app's
:class:`~triage_model.micro_batching.MicroBatcher`, which runs the texts of every request waiting at that
moment through one onnxruntime run, then the request scores its own results in a worker thread
(``triage_model.pipeline.escalate``, the second half of ``triage_texts``). Without batching, one
worker-thread call runs ``triage_texts`` for the request alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime

from fastapi.concurrency import run_in_threadpool

from serving.alerts import VolumeMonitor
from serving.errors import ApiError
from serving.gate import ClientGone, InferenceGate, QueueFull
from serving.observability import ALERT_STORE_ERRORS, ESCALATION_TIERS, ESCALATION_TRIGGERS, PREDICTIONS, SHED
from serving.schemas import TriageRequest
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.micro_batching import BatcherOverloaded, MicroBatcher
from triage_model.pipeline import escalate, triage_texts
from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult
from triage_model.schema import HEADS

log = logging.getLogger("serving")


def check_limits(items: list[TriageRequest], settings: Settings) -> None:
    if len(items) > settings.max_batch_items:
        raise ApiError(413, "batch_too_large", f"{len(items)} items; at most {settings.max_batch_items} per call")
    for i, item in enumerate(items):
        if len(item.text) > settings.max_text_chars:
            where = f"items[{i}].text" if len(items) > 1 else "text"
            raise ApiError(413, "text_too_large", f"{where} has {len(item.text)} characters; at most {settings.max_text_chars}")


def predict_and_score(
    predictor: TriagePredictor, scorer: EscalationScorer, items: list[TriageRequest], batch_size: int, now: datetime
) -> list[TriageResult]:
    """Heads, then escalation on each item's own text and context (one worker-thread call: both are
    CPU work, and the first scoring call may load jieba)."""
    return triage_texts(predictor, scorer, [it.text for it in items], items, now=now, batch_size=batch_size)


async def batched_predict(
    batcher: MicroBatcher, texts: Sequence[str], disconnected: Callable[[], Awaitable[object]] | None = None
) -> list[TriageResult]:
    """The heads for ``texts`` from a shared run of the batcher.

    A full batcher queue is a 429 (``QueueFull`` with the batcher's Retry-After). A client that hangs up
    while its texts wait for a run takes them out of the queue unrun (``ClientGone``), as the gate does
    for requests waiting for a slot."""
    try:
        if disconnected is None:
            return await batcher.predict(texts)
        predict = asyncio.ensure_future(batcher.predict(texts))
        gone = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait([predict, gone], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            predict.cancel()
            raise
        finally:
            if not gone.done():
                gone.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await gone
        if not predict.done() and not gone.cancelled() and gone.exception() is None:  # the client hung up first
            predict.cancel()
            with suppress(asyncio.CancelledError):
                return await predict  # its run finished in the same instant
            SHED.labels(reason="client_gone").inc()
            raise ClientGone()
        return await predict  # done, or still running if the disconnect waiter failed on its own
    except BatcherOverloaded as err:
        SHED.labels(reason="batch_queue_full").inc()
        raise QueueFull(err.retry_after) from err


def count(results: list[TriageResult], monitor: VolumeMonitor) -> None:
    """Prometheus counters and the volume monitor see every served prediction.

    The monitor gets one call per category in the batch (not per item). A failing alert store (Redis
    down) is logged and counted, never turned into a failed prediction."""
    for res in results:
        for head in HEADS:
            PREDICTIONS.labels(head=head, label=getattr(res, head).label).inc()
        if res.escalation is not None:
            ESCALATION_TIERS.labels(tier=res.escalation.tier).inc()
            for trig in res.escalation.triggers:
                ESCALATION_TRIGGERS.labels(trigger=trig.name).inc()
    try:
        for category, n in Counter(res.category.label for res in results).items():
            monitor.record(category, n)
    except Exception as err:  # the alert store is an add-on; the complaint was triaged
        ALERT_STORE_ERRORS.inc()
        log.warning(f"volume alerts not updated: {type(err).__name__}: {err}")


async def triage_items(
    items: list[TriageRequest],
    predictor: TriagePredictor,
    gate: InferenceGate,
    settings: Settings,
    scorer: EscalationScorer,
    monitor: VolumeMonitor,
    disconnected: Callable[[], Awaitable[object]] | None = None,
    batcher: MicroBatcher | None = None,
) -> list[TriageResult]:
    """Check limits, predict and score off the event loop under the inference gate, count.

    The gate refuses (429/503, ``serving.gate``) instead of queueing without bound, and drops the
    request when ``disconnected`` returns first (the client hung up while waiting). Items without
    ``received_at`` are scored as received now (UTC), one instant for the whole call.

    With a ``batcher`` the heads come from a run shared with other requests (the batcher looks the
    served model up per run, so ``predictor`` is not used for them), then escalation runs in a worker
    thread; without one, ``predictor`` runs this request alone.
    """
    check_limits(items, settings)
    now = datetime.now(UTC)
    async with gate.slot(disconnected):
        if batcher is None:
            results = await run_in_threadpool(predict_and_score, predictor, scorer, items, settings.micro_batch_size, now)
        else:
            texts = [it.text for it in items]
            heads = await batched_predict(batcher, texts, disconnected)
            results = await run_in_threadpool(escalate, scorer, heads, texts, items, now=now)
    count(results, monitor)
    return results


def disconnect_waiter(receive) -> Callable[[], Awaitable[None]]:
    """A coroutine factory that returns once the client has disconnected (after the body was read,
    the server's ``receive`` yields nothing but ``http.disconnect``)."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait
