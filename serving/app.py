"""Assembles the FastAPI app: settings, model holder, middleware, error handlers, routers.

``create_app()`` is the uvicorn factory (``triage serve``); tests build it with explicit settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.alerts import VolumeMonitor
from serving.errors import error_response, install_error_handlers
from serving.gate import InferenceGate
from serving.model_holder import ModelHolder
from serving.observability import IN_FLIGHT, REQUEST_LATENCY, configure_logging
from serving.routes import alerts, feedback, health, model, triage
from serving.settings import Settings
from triage_model.escalation import EscalationScorer, load_policy

log = logging.getLogger("serving")

DESCRIPTION = """
投诉分诊 API — reads a Chinese customer complaint and returns its **category** (10 classes),
**severity grade** (一级/二级/三级 → SLA), **sentiment** with an emotion index, and the
**escalation** decision (tier L1–L4, the triggers that fired with their evidence, SLA deadlines).

Every response carries `model_version`; every error is `{"error", "error_type", "request_id"}`.
"""


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Reject bodies over the limit with 413 — by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = error_response(request, 413, "payload_too_large", f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)


class RequestContext(BaseHTTPMiddleware):
    """Request id (echoed or generated), in-flight gauge, latency histogram, one JSON access-log line."""

    async def dispatch(self, request: Request, call_next):
        rid = request.headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        request.state.request_id = rid
        start = time.perf_counter()
        IN_FLIGHT.inc()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - start
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(route=path, method=request.method, status=str(status)).observe(elapsed)
            log.info(
                "request",
                extra={
                    "request_id": rid,
                    "route": f"{request.method} {path}",
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                },
            )
        response.headers["X-Request-ID"] = rid
        return response


def _install_sighup(app: FastAPI) -> None:
    """SIGHUP reloads the configured model directory (same path as POST /v1/admin/reload)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def reload() -> None:
            try:
                result = await model.reload_model(app.state.holder, app.state.settings.model_dir)
                log.info("reloaded on SIGHUP", extra={"model_version": result.model_version})
            except Exception as err:  # keep serving the old model; the reason goes to the log
                log.error(f"SIGHUP reload rejected: {err}")

        task = loop.create_task(reload())
        app.state.background_tasks.add(task)  # keep a reference so the task is not garbage-collected
        task.add_done_callback(app.state.background_tasks.discard)

    with suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hup)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging()
        predictor = await asyncio.to_thread(app.state.holder.load, settings.model_dir)
        await asyncio.to_thread(app.state.scorer.warmup)  # jieba's dictionary, before the first request
        model.publish_model_info(predictor)
        log.info("model loaded", extra={"model_version": predictor.version})
        _install_sighup(app)
        yield

    app = FastAPI(title="投诉分诊 Complaint Triage API", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.holder = ModelHolder(settings.intra_op_threads)
    app.state.background_tasks = set()
    app.state.gate = InferenceGate(settings.max_concurrent_inferences, settings.max_queue)
    app.state.scorer = EscalationScorer(load_policy(settings.escalation_policy))  # a bad policy fails here, at start-up
    app.state.volume = VolumeMonitor(
        window_s=settings.alert_window_s,
        baseline_s=settings.alert_baseline_s,
        ratio=settings.alert_ratio,
        min_count=settings.alert_min_count,
        bucket_s=settings.alert_bucket_s,
        min_history_s=settings.alert_min_history_s,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # added last = outermost: every response, even a 413, gets a request id
    for router in (health.router, triage.router, model.router, feedback.router, alerts.router):
        app.include_router(router)
    return app
