"""``GET /v1/model`` (what is served) and ``POST /v1/admin/reload`` (atomic hot reload)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from serving.deps import get_holder, get_predictor, require_admin_key, require_api_key
from serving.errors import ApiError
from serving.model_holder import ModelHolder
from serving.observability import MODEL_INFO, RELOADS
from serving.schemas import ErrorResponse, ModelInfo
from triage_model.model_dir import ModelLoadError
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TEXT_TRIGGERS

router = APIRouter(prefix="/v1", tags=["model"])


def metrics_summary(metrics: dict) -> dict[str, dict[str, float]]:
    test = metrics.get("test") or {}
    return {
        head: {k: round(float(m[k]), 4) for k in ("accuracy", "macro_f1", "ece", "macro_auc") if m.get(k) is not None}
        for head, m in test.items()
        if isinstance(m, dict) and "macro_f1" in m
    }


@router.get("/model", response_model=ModelInfo, dependencies=[Depends(require_api_key)], summary="the model being served")
def model_info(predictor: TriagePredictor = Depends(get_predictor), holder: ModelHolder = Depends(get_holder)) -> ModelInfo:
    meta = predictor.meta
    return ModelInfo(
        model_name=meta.model_name,
        model_version=meta.model_version,
        data_hash=meta.data_hash,
        git_commit=meta.git_commit,
        created_at=meta.created_at,
        labels={h: list(v) for h, v in HEADS.items()},
        trigger_head=list(TEXT_TRIGGERS) if predictor.has_trigger_head else [],
        trigger_thresholds=meta.trigger_thresholds if predictor.has_trigger_head else {},
        metrics_summary=metrics_summary(predictor.metrics),
        loaded_at=holder.loaded_at,
    )


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: str | None = Field(None, description="exported model directory; default: the one configured at start-up")


class ReloadResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str
    previous_version: str | None
    model_version: str


def publish_model_info(predictor: TriagePredictor) -> None:
    MODEL_INFO.info({"model_version": predictor.version, "model_name": predictor.meta.model_name, "data_hash": predictor.meta.data_hash})


async def reload_model(holder: ModelHolder, model_dir: Path | None) -> ReloadResponse:
    previous = holder.predictor.version if holder.predictor else None
    try:
        new = await run_in_threadpool(holder.load, model_dir)
    except (ModelLoadError, OSError) as err:
        RELOADS.labels(outcome="rejected").inc()
        raise ApiError(409, "model_rejected", f"reload rejected, still serving {previous}: {err}") from err
    RELOADS.labels(outcome="ok").inc()
    publish_model_info(new)
    return ReloadResponse(status="reloaded", previous_version=previous, model_version=new.version)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(require_admin_key)],
    responses={code: {"model": ErrorResponse} for code in (401, 403, 409)},
    summary="load a model directory, validate it on a canary batch, swap it in atomically",
)
async def admin_reload(request: Request, body: ReloadRequest | None = None, holder: ModelHolder = Depends(get_holder)) -> ReloadResponse:
    target = Path(body.model_dir) if body and body.model_dir else request.app.state.settings.model_dir
    return await reload_model(holder, target)
