"""Shared things routes get through ``Depends``: settings, the model, the API-key checks."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from serving.alerts import VolumeMonitor
from serving.errors import ApiError
from serving.model_holder import ModelHolder
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.predictor import TriagePredictor

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when TRIAGE_API_KEYS is set")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def get_scorer(request: Request) -> EscalationScorer:
    return request.app.state.scorer


def get_monitor(request: Request) -> VolumeMonitor:
    return request.app.state.volume


def get_predictor(holder: ModelHolder = Depends(get_holder)) -> TriagePredictor:
    predictor = holder.predictor
    if predictor is None:
        raise ApiError(503, "model_not_ready", "the model is still loading", headers={"Retry-After": "5"})
    return predictor


def _key_ok(given: str | None, keys: list[str]) -> bool:
    return given is not None and any(hmac.compare_digest(given, k) for k in keys)


def require_api_key(key: str | None = Depends(api_key_header), settings: Settings = Depends(get_settings)) -> None:
    if settings.api_keys and not _key_ok(key, settings.api_keys + settings.admin_keys):
        raise ApiError(401, "unauthorized", "missing or invalid X-API-Key")


def require_admin_key(key: str | None = Depends(api_key_header), settings: Settings = Depends(get_settings)) -> None:
    if not settings.admin_keys:
        raise ApiError(403, "admin_disabled", "admin endpoints are disabled: set TRIAGE_ADMIN_KEYS")
    if not _key_ok(key, settings.admin_keys):
        raise ApiError(401, "unauthorized", "missing or invalid admin X-API-Key")
