"""``POST /v1/triage`` and ``POST /v1/triage/batch``: thin — validation is pydantic's, work is the service's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from serving.alerts import VolumeMonitor
from serving.deps import get_batcher, get_gate, get_monitor, get_predictor, get_scorer, get_settings, require_triage
from serving.errors import ApiError, request_id_of
from serving.gate import InferenceGate
from serving.request_log import log_triage
from serving.schemas import (
    EXAMPLE_CALM,
    EXAMPLE_FRAUD,
    EXAMPLE_REPEAT,
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    TriageRequest,
    TriageResponse,
)
from serving.service import disconnect_waiter, triage_items
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.micro_batching import MicroBatcher
from triage_model.predictor import TriagePredictor
from triage_model.results import TriageResult

ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 413, 415, 422, 429, 503)}
router = APIRouter(prefix="/v1", tags=["triage"], dependencies=[Depends(require_triage)], responses=ERRORS)

SINGLE_EXAMPLES = {
    "calm_inquiry": {"summary": "三级 calm inquiry", "value": EXAMPLE_CALM},
    "fraud_legal_threat": {"summary": "一级 fraud report with a legal threat", "value": EXAMPLE_FRAUD},
    "repeat_near_sla": {"summary": "repeat complaint near its SLA", "value": EXAMPLE_REPEAT},
}


@dataclass
class TriageDeps:
    """What both triage routes need, resolved per request by one dependency (:func:`triage_deps`), so the
    two routes cannot drift apart."""

    predictor: TriagePredictor
    settings: Settings
    scorer: EscalationScorer
    monitor: VolumeMonitor
    gate: InferenceGate
    batcher: MicroBatcher | None

    async def triage(self, items: list[TriageRequest], request: Request) -> list[TriageResult]:
        """Score ``items`` through the service (gate, dynamic batching, escalation), stopping if the client leaves."""
        waiter = disconnect_waiter(request.receive)
        return await triage_items(items, self.predictor, self.gate, self.settings, self.scorer, self.monitor, waiter, self.batcher)


async def triage_deps(
    predictor: Annotated[TriagePredictor, Depends(get_predictor)],
    settings: Annotated[Settings, Depends(get_settings)],
    scorer: Annotated[EscalationScorer, Depends(get_scorer)],
    monitor: Annotated[VolumeMonitor, Depends(get_monitor)],
    gate: Annotated[InferenceGate, Depends(get_gate)],
    batcher: Annotated[MicroBatcher | None, Depends(get_batcher)],
) -> TriageDeps:
    """A coroutine, not the class itself as the dependency: FastAPI would build a class in the thread pool."""
    return TriageDeps(predictor, settings, scorer, monitor, gate, batcher)


async def batch_size_first(request: Request, settings: Settings = Depends(get_settings)) -> None:
    """413 on the item count before a single item is validated: 130,000 tiny items used to be
    validated (3.5 s on the event loop) before the limit answered. Dependencies run before the body
    is validated; the body was already parsed once, and ``request.json()`` returns that parse."""
    try:
        body = await request.json()
    except ValueError:
        return  # not JSON: the body validation answers 422 invalid_json
    items = body.get("items") if isinstance(body, dict) else None
    if isinstance(items, list) and len(items) > settings.max_batch_items:
        raise ApiError(413, "batch_too_large", f"{len(items)} items; at most {settings.max_batch_items} per call")


@router.post("/triage", response_model=TriageResponse, summary="triage one complaint")
async def triage_one(
    request: Request,
    body: TriageRequest = Body(openapi_examples=SINGLE_EXAMPLES),
    deps: TriageDeps = Depends(triage_deps),
) -> TriageResponse:
    [result] = await deps.triage([body], request)
    log_triage(request, [body.text], [result])  # opt-in request log, so a correction may name only the request id
    return TriageResponse(**result.model_dump(), request_id=request_id_of(request))


@router.post(
    "/triage/batch",
    response_model=BatchResponse,
    dependencies=[Depends(batch_size_first)],
    summary="triage up to 64 complaints in one call; each item may carry an id, echoed on its result",
)
async def triage_batch(
    request: Request,
    body: BatchRequest = Body(
        openapi_examples={
            "two": {"summary": "two complaints", "value": {"items": [{"id": "T-1", **EXAMPLE_CALM}, {"id": "T-2", **EXAMPLE_FRAUD}]}}
        }
    ),
    deps: TriageDeps = Depends(triage_deps),
) -> BatchResponse:
    results = await deps.triage(body.items, request)
    echoed = [BatchItemResult(**res.model_dump(), id=item.id) for res, item in zip(results, body.items, strict=True)]
    log_triage(request, [item.text for item in body.items], results, [item.id for item in body.items])  # opt-in request log
    # the model that computed them: with dynamic batching a reload may have landed since the request began
    version = results[0].model_version if results else deps.predictor.version
    return BatchResponse(request_id=request_id_of(request), model_version=version, results=echoed)
