"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import get_holder
from serving.model_holder import ModelHolder
from serving.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="liveness: the process answers")
def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, summary="readiness: a model is loaded", responses={503: {"model": ReadyResponse}})
def readyz(response: Response, holder: ModelHolder = Depends(get_holder)) -> ReadyResponse:
    predictor = holder.predictor
    if predictor is None:
        response.status_code = 503
        return ReadyResponse(status="loading")
    return ReadyResponse(status="ready", model_version=predictor.version)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
