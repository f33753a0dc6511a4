"""The triage use case behind the routes: limits → gate → predict (off the event loop) → escalation → counters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi.concurrency import run_in_threadpool

from serving.alerts import VolumeMonitor
from serving.errors import ApiError
from serving.gate import InferenceGate
from serving.observability import ALERT_STORE_ERRORS, ESCALATION_TIERS, ESCALATION_TRIGGERS, PREDICTIONS
from serving.schemas import TriageRequest
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.pipeline import triage_texts
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
) -> list[TriageResult]:
    """Check limits, predict and score off the event loop under the inference gate, count.

    The gate refuses (429/503, ``serving.gate``) instead of queueing without bound, and drops the
    request when ``disconnected`` returns first (the client hung up while waiting). Items without
    ``received_at`` are scored as received now (UTC), one instant for the whole call.
    """
    check_limits(items, settings)
    now = datetime.now(UTC)
    async with gate.slot(disconnected):
        results = await run_in_threadpool(predict_and_score, predictor, scorer, items, settings.micro_batch_size, now)
    count(results, monitor)
    return results


def disconnect_waiter(receive) -> Callable[[], Awaitable[None]]:
    """A coroutine factory that returns once the client has disconnected (after the body was read,
    the server's ``receive`` yields nothing but ``http.disconnect``)."""

    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait
