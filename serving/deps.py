"""Shared things routes get through ``Depends``: settings, the model, the gate, the batcher, the scoped key checks.

Every dependency here is ``async def`` although none awaits anything: FastAPI runs a plain ``def`` dependency
in the thread pool, and on the triage path that was nine thread hops per request (a quarter of the event
loop's time under 32 clients, measured with py-spy) to read attributes off ``app.state``. None of them
blocks, so they run on the loop.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from serving.alerts import VolumeMonitor
from serving.auth import ApiKey, KeyRing
from serving.errors import ApiError
from serving.gate import InferenceGate
from serving.model_holder import ModelHolder
from serving.settings import Settings
from triage_model.escalation import EscalationScorer
from triage_model.micro_batching import MicroBatcher
from triage_model.predictor import TriagePredictor

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when keys of the endpoint's scope are configured")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


async def get_scorer(request: Request) -> EscalationScorer:
    return request.app.state.scorer


async def get_monitor(request: Request) -> VolumeMonitor:
    return request.app.state.volume


async def get_gate(request: Request) -> InferenceGate:
    return request.app.state.gate


async def get_batcher(request: Request) -> MicroBatcher | None:
    """The process's dynamic batcher (made in the app's lifespan); None when dynamic batching is off."""
    return getattr(request.app.state, "batcher", None)


async def get_keys(request: Request) -> KeyRing:
    return request.app.state.keys


async def get_predictor(holder: ModelHolder = Depends(get_holder)) -> TriagePredictor:
    predictor = holder.predictor
    if predictor is None:
        raise ApiError(503, "model_not_ready", "the model is still loading", headers={"Retry-After": "5"})
    return predictor


def _given_key(request: Request, header: str | None) -> str | None:
    if header:
        return header
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None  # Prometheus sends a bearer token


def require_scope(scope: str, *, open_without_keys: bool) -> Callable[..., ApiKey | None]:
    """A dependency that lets the request through only with a key that has ``scope``.

    ``open_without_keys``: when no key of this scope (nor admin) is configured, the endpoint is open
    (triage in development) rather than off (feedback, admin: 403 until keys are configured)."""

    async def check(request: Request, header: str | None = Depends(api_key_header), keys: KeyRing = Depends(get_keys)) -> ApiKey | None:
        if not keys.configured[scope] and not (scope != "triage" and keys.configured["admin"]):
            if open_without_keys:
                return None
            raise ApiError(403, f"{scope}_disabled", f"{scope} endpoints are off: configure TRIAGE_{scope.upper()}_KEYS")
        key = keys.authenticate(_given_key(request, header))
        if key is None:
            raise ApiError(401, "unauthorized", "missing or invalid X-API-Key")
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"this key has no {scope!r} scope")
        request.state.key_id = key.key_id
        return key

    check.__name__ = f"require_{scope}_scope"
    return check


require_triage = require_scope("triage", open_without_keys=True)
require_feedback = require_scope("feedback", open_without_keys=False)
require_admin = require_scope("admin", open_without_keys=False)


async def require_metrics(request: Request, header: str | None = Depends(api_key_header), keys: KeyRing = Depends(get_keys)) -> None:
    """/metrics is open only while no key at all is configured (development); then it needs the
    metrics or admin scope — label volumes, model version and data hash are not for every caller."""
    if not keys.any_configured:
        return
    key = keys.authenticate(_given_key(request, header))
    if key is None:
        raise ApiError(401, "unauthorized", "missing or invalid X-API-Key (or Authorization: Bearer)")
    if not key.allows("metrics"):
        raise ApiError(403, "forbidden", "this key has no 'metrics' scope")
    request.state.key_id = key.key_id
