"""The triage use case behind the routes: limits → predict (off the event loop) → escalation → counters."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from serving.errors import ApiError
from serving.gate import InferenceGate, QueueFull
from serving.observability import PREDICTIONS
from serving.schemas import TriageRequest
from serving.settings import Settings
from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult
from triage_model.schema import HEADS


def check_limits(items: list[TriageRequest], settings: Settings) -> None:
    if len(items) > settings.max_batch_items:
        raise ApiError(413, "batch_too_large", f"{len(items)} items; at most {settings.max_batch_items} per call")
    for i, item in enumerate(items):
        if len(item.text) > settings.max_text_chars:
            where = f"items[{i}].text" if len(items) > 1 else "text"
            raise ApiError(413, "text_too_large", f"{where} has {len(item.text)} characters; at most {settings.max_text_chars}")


async def triage_items(
    items: list[TriageRequest], predictor: TriagePredictor, gate: InferenceGate, settings: Settings
) -> list[TriageResult]:
    check_limits(items, settings)
    try:
        async with gate.slot():
            results = await run_in_threadpool(predictor.predict, [it.text for it in items], settings.micro_batch_size)
    except QueueFull:
        raise ApiError(429, "overloaded", "too many requests in flight; retry shortly", headers={"Retry-After": "1"}) from None
    for res in results:
        for head in HEADS:
            PREDICTIONS.labels(head=head, label=getattr(res, head).label).inc()
    return results
