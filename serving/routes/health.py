"""Liveness, readiness and Prometheus metrics.

``async def`` on purpose: these run on the event loop, never queue behind inference in the thread
pool, so /healthz answers within milliseconds while every inference slot is busy.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import get_holder, get_scorer, require_metrics
from serving.model_holder import ModelHolder
from serving.observability import metrics_registry
from serving.schemas import ErrorResponse, HealthResponse, ReadyResponse
from triage_model.escalation import EscalationScorer

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])
"""Mounted on the API port only when TRIAGE_METRICS_PORT is unset (then it needs the metrics scope
once any key is configured)."""


@router.get("/healthz", response_model=HealthResponse, summary="liveness: the process answers")
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, summary="readiness: a model is loaded", responses={503: {"model": ReadyResponse}})
async def readyz(
    response: Response, holder: ModelHolder = Depends(get_holder), scorer: EscalationScorer = Depends(get_scorer)
) -> ReadyResponse:
    calendar = scorer.clock.calendar.status()
    warnings = [f"calendar: {w}" for w in calendar.pop("warnings")]
    predictor = holder.predictor
    if predictor is None:
        response.status_code = 503
        return ReadyResponse(status="loading", calendar=calendar, warnings=warnings)
    canary = vars(holder.canary) if holder.canary else None
    return ReadyResponse(status="ready", model_version=predictor.version, canary=canary, calendar=calendar, warnings=warnings)


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (metrics or admin scope once keys are configured)",
    response_class=Response,
    dependencies=[Depends(require_metrics)],
    responses={code: {"model": ErrorResponse} for code in (401, 403)},
)
async def metrics(request: Request) -> Response:
    """This process's metrics; with several workers (``PROMETHEUS_MULTIPROC_DIR``) all of theirs, merged."""
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)
