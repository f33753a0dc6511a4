"""``GET /v1/model`` (what is served, and by which worker process) and ``POST /v1/admin/reload`` (atomic
hot reload; with ``TRIAGE_RELOAD_MARKER`` every other worker follows, see ``serving.reload_marker``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from serving.deps import get_holder, get_predictor, get_settings, require_admin, require_triage
from serving.errors import ApiError
from serving.model_holder import ModelHolder, OutsideModelsRoot, redact_paths, resolve_reload_target
from serving.observability import MODEL_INFO, RELOADS, publish_served_version
from serving.reload_marker import ReloadMarker
from serving.schemas import ErrorResponse, ModelInfo
from serving.settings import Settings
from triage_model.model_dir import DEFAULT_MODEL_DIR, ModelLoadError
from triage_model.predictor import TriagePredictor
from triage_model.schema import HEADS, TEXT_TRIGGERS

router = APIRouter(prefix="/v1", tags=["model"])
log = logging.getLogger("serving")


def metrics_summary(metrics: dict) -> dict[str, dict[str, float]]:
    test = metrics.get("test") or {}
    return {
        head: {k: round(float(m[k]), 4) for k in ("accuracy", "macro_f1", "ece", "macro_auc") if m.get(k) is not None}
        for head, m in test.items()
        if isinstance(m, dict) and "macro_f1" in m
    }


@router.get("/model", response_model=ModelInfo, dependencies=[Depends(require_triage)], summary="the model being served")
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
        concurrent_runs=holder.plan.runs,
        intra_op_threads=holder.plan.threads,
        worker_pid=os.getpid(),
    )


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: str | None = Field(
        None,
        max_length=1000,
        description="a model directory inside the models root (relative to it, or absolute); default: the configured one",
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str
    previous_version: str | None
    model_version: str


def publish_model_info(predictor: TriagePredictor, previous: str | None = None) -> None:
    MODEL_INFO.info({"model_version": predictor.version, "model_name": predictor.meta.model_name, "data_hash": predictor.meta.data_hash})
    publish_served_version(predictor.version, previous)


async def reload_model(
    holder: ModelHolder, model_dir: Path | None, settings: Settings, marker: ReloadMarker | None = None
) -> ReloadResponse:
    """Load, check and swap in ``model_dir``; a refusal names no absolute path (the log has them).
    With a ``marker`` (several workers), a successful reload is announced to the other workers."""
    previous = holder.predictor.version if holder.predictor else None
    try:
        new = await run_in_threadpool(holder.load, model_dir)
    except (ModelLoadError, OSError, ValueError) as err:
        RELOADS.labels(outcome="rejected").inc()
        log.warning(f"reload of {model_dir or DEFAULT_MODEL_DIR} rejected: {err}")
        labels = {DEFAULT_MODEL_DIR.parent: "<package>"}
        if settings.models_root:
            labels[Path(settings.models_root)] = "<models_root>"
        if model_dir:
            labels[Path(model_dir)] = "<model_dir>"
        reason = redact_paths(str(err), labels)
        raise ApiError(409, "model_rejected", f"reload rejected, still serving {previous}: {reason}") from err
    RELOADS.labels(outcome="ok").inc()
    publish_model_info(new, previous)
    if marker is not None:  # the other workers load the same directory within TRIAGE_RELOAD_POLL_S
        try:
            marker.announce(None if model_dir == settings.model_dir else model_dir, new.version)
            log.info("reload announced to the other workers", extra={"model_version": new.version})
        except OSError as err:  # this worker serves the new model; the others keep theirs until the next reload
            log.error(f"reload marker {marker.path} not written: {err}")
    return ReloadResponse(status="reloaded", previous_version=previous, model_version=new.version)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorResponse} for code in (401, 403, 409)},
    summary="load a model directory (inside the models root), check it on the pinned canary set, swap it in atomically",
)
async def admin_reload(
    request: Request,
    body: ReloadRequest | None = None,
    holder: ModelHolder = Depends(get_holder),
    settings: Settings = Depends(get_settings),
) -> ReloadResponse:
    target = settings.model_dir
    if body and body.model_dir:
        try:
            target = resolve_reload_target(body.model_dir, settings.models_root)
        except OutsideModelsRoot as err:
            RELOADS.labels(outcome="refused").inc()
            raise ApiError(403, "outside_models_root", str(err)) from err
    return await reload_model(holder, target, settings, getattr(request.app.state, "reload_marker", None))
