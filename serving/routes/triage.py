"""``POST /v1/triage`` and ``POST /v1/triage/batch``: thin — validation is pydantic's, work is the service's."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request

from serving.alerts import VolumeMonitor
from serving.deps import get_monitor, get_predictor, get_scorer, get_settings, require_api_key
from serving.errors import request_id_of
from serving.schemas import (
    EXAMPLE_CALM,
    EXAMPLE_FRAUD,
    EXAMPLE_REPEAT,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    TriageRequest,
    TriageResponse,
)
from serving.service import triage_items
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.predictor import TriagePredictor

ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503)}
router = APIRouter(prefix="/v1", tags=["triage"], dependencies=[Depends(require_api_key)], responses=ERRORS)

SINGLE_EXAMPLES = {
    "calm_inquiry": {"summary": "三级 calm inquiry", "value": EXAMPLE_CALM},
    "fraud_legal_threat": {"summary": "一级 fraud report with a legal threat", "value": EXAMPLE_FRAUD},
    "repeat_near_sla": {"summary": "repeat complaint near its SLA", "value": EXAMPLE_REPEAT},
}


@router.post("/triage", response_model=TriageResponse, summary="triage one complaint")
async def triage_one(
    request: Request,
    body: TriageRequest = Body(openapi_examples=SINGLE_EXAMPLES),
    predictor: TriagePredictor = Depends(get_predictor),
    settings: Settings = Depends(get_settings),
    scorer: EscalationScorer = Depends(get_scorer),
    monitor: VolumeMonitor = Depends(get_monitor),
) -> TriageResponse:
    [result] = await triage_items([body], predictor, request.app.state.gate, settings, scorer, monitor)
    return TriageResponse(**result.model_dump(), request_id=request_id_of(request))


@router.post("/triage/batch", response_model=BatchResponse, summary="triage up to 64 complaints in one call")
async def triage_batch(
    request: Request,
    body: BatchRequest = Body(openapi_examples={"two": {"summary": "two complaints", "value": {"items": [EXAMPLE_CALM, EXAMPLE_FRAUD]}}}),
    predictor: TriagePredictor = Depends(get_predictor),
    settings: Settings = Depends(get_settings),
    scorer: EscalationScorer = Depends(get_scorer),
    monitor: VolumeMonitor = Depends(get_monitor),
) -> BatchResponse:
    results = await triage_items(body.items, predictor, request.app.state.gate, settings, scorer, monitor)
    return BatchResponse(request_id=request_id_of(request), model_version=predictor.version, results=results)
