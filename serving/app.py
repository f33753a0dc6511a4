"""Assembles the FastAPI app: settings, model holder, middleware, error handlers, routers.

``create_app()`` is the uvicorn factory (``triage serve``); tests build it with explicit settings.

Several workers (``triage serve --workers N``): each worker runs this whole app with its own model
copy; metrics are merged across them (``serving.observability``, ``PROMETHEUS_MULTIPROC_DIR``) and a
reload in one reaches the others (``serving.reload_marker``, ``TRIAGE_RELOAD_MARKER``).

The two middlewares are plain ASGI (no ``BaseHTTPMiddleware``): they add almost nothing to a
request, which keeps ``/healthz`` fast under load, and they never hide the client's
``http.disconnect`` from the routes (the inference gate drops work whose client has gone).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import signal
import time
import uuid
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI, Request
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.alerts import build_monitor
from serving.auth import KeyRing, RateLimiter
from serving.errors import ApiError, error_response, install_error_handlers
from serving.gate import InferenceGate
from serving.model_holder import ModelHolder, OutsideModelsRoot, resolve_reload_target
from serving.observability import (
    BATCH_SECONDS,
    BATCH_TEXTS,
    IN_FLIGHT,
    RELOADS,
    REQUEST_LATENCY,
    configure_logging,
    mark_worker_dead,
    metrics_registry,
    multiproc_dir,
)
from serving.reload_marker import ReloadMarker
from serving.routes import alerts, feedback, health, model, triage
from serving.settings import Settings
from triage_model.escalation import EscalationScorer, load_policy
from triage_model.micro_batching import MicroBatcher
from triage_model.model_dir import resolve_model_dir

log = logging.getLogger("serving")

DESCRIPTION = """
投诉分诊 API — reads a Chinese customer complaint and returns its **category** (10 classes),
**severity grade** (一级/二级/三级 → SLA), **sentiment** with an emotion index, and the
**escalation** decision (tier L1–L4, the triggers that fired with their evidence, SLA deadlines).

Every response carries `model_version`; every error is `{"error", "error_type", "request_id"}`.
Bodies are UTF-8 JSON sent as `Content-Type: application/json` (anything else: 415).
"""

_REQUEST_ID_UNSAFE = re.compile(r"[^\x21-\x7e]")
BODY_METHODS = {"POST", "PUT", "PATCH"}


def clean_request_id(raw: bytes | None, max_chars: int) -> str:
    """The caller's X-Request-ID as we echo it: visible ASCII only (no spaces, tabs or control
    characters), at most ``max_chars``; empty → a fresh id. Echoing a value that ended in whitespace
    made h11 refuse the whole reply."""
    cleaned = _REQUEST_ID_UNSAFE.sub("", (raw or b"").decode("latin-1"))[:max_chars]
    return cleaned or uuid.uuid4().hex


class RequestContext:
    """Request id (cleaned echo or generated), in-flight gauge, latency histogram, one JSON access-log line."""

    def __init__(self, app: ASGIApp, max_request_id_chars: int = 128) -> None:
        self.app = app
        self.max_chars = max_request_id_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = clean_request_id(dict(scope["headers"]).get(b"x-request-id"), self.max_chars)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        start = time.perf_counter()
        IN_FLIGHT.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            IN_FLIGHT.dec()
            elapsed = time.perf_counter() - start
            path = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_LATENCY.labels(route=path, method=scope["method"], status=str(status)).observe(elapsed)
            extra = {"request_id": rid, "route": f"{scope['method']} {path}", "status": status, "latency_ms": round(elapsed * 1000, 2)}
            if state.get("key_id"):
                extra["key_id"] = state["key_id"]
            log.info("request", extra=extra)


class BodyGuard:
    """Reads the request body up front and decides before any route sees it:

    * over the limit → 413, by Content-Length or while a chunked body streams (the route's own
      limit: POST /v1/feedback has a smaller one);
    * a body not sent as ``application/json`` (``charset=utf-8`` allowed) → 415;
    * a body that is not UTF-8 (UTF-16, Latin-1) or holds NUL bytes → 422 ``invalid_json``
      (RFC 8259: JSON between systems is UTF-8).

    Then the route reads the buffered body; after it, ``receive`` is the server's again, so a
    client that hangs up is still seen (``http.disconnect``)."""

    def __init__(self, app: ASGIApp, max_bytes: int, limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.max_bytes)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        too_large = f"request body over {limit} bytes"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) <= 2 * limit:
                await self._drain(receive, limit)
            await self._reject(scope, receive, send, 413, "payload_too_large", too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                if message.get("more_body", False):
                    await self._drain(receive, limit)
                await self._reject(scope, receive, send, 413, "payload_too_large", too_large)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            media, _, params = headers.get(b"content-type", b"").decode("latin-1").partition(";")
            charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, flags=re.I)
            if media.strip().lower() != "application/json" or (charset and charset.group(1).lower() not in ("utf-8", "utf8")):
                await self._reject(
                    scope, receive, send, 415, "unsupported_media_type", "send the body as Content-Type: application/json (UTF-8)"
                )
                return
            try:
                body.decode("utf-8")
                clean = b"\x00" not in body
            except UnicodeDecodeError:
                clean = False
            if not clean:
                await self._reject(scope, receive, send, 422, "invalid_json", "request body is not UTF-8 JSON")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive: Receive, budget: int) -> None:
        """Read and drop up to ``budget`` more bytes of a refused body, so a client still sending it
        reads our 413 instead of a connection reset (the server closes after the reply either way)."""
        dropped = 0
        while dropped <= budget:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, status: int, error_type: str, message: str) -> None:
        response = error_response(Request(scope, receive), status, error_type, message)
        await response(scope, receive, send)


def _install_sighup(app: FastAPI) -> None:
    """SIGHUP reloads the configured model directory (same checks as POST /v1/admin/reload)."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def reload() -> None:
            try:
                settings = app.state.settings
                result = await model.reload_model(app.state.holder, settings.model_dir, settings, app.state.reload_marker)
                log.info("reloaded on SIGHUP", extra={"model_version": result.model_version})
            except Exception as err:  # keep serving the old model; the reason goes to the log
                log.error(f"SIGHUP reload rejected: {err}")

        task = loop.create_task(reload())
        app.state.background_tasks.add(task)  # keep a reference so the task is not garbage-collected
        task.add_done_callback(app.state.background_tasks.discard)

    with suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hup)


async def follow_marker(app: FastAPI, announced: dict) -> None:
    """Load what another worker reloaded (``announced``: the marker's content), with the same checks: a
    directory other than the configured one must be inside the models root. Failures are logged; this
    worker keeps its model."""
    settings = app.state.settings
    requested, origin = announced.get("model_dir"), announced.get("pid")
    target = settings.model_dir
    if requested and Path(requested).resolve() != resolve_model_dir(settings.model_dir).resolve():
        try:
            target = resolve_reload_target(str(requested), settings.models_root)
        except OutsideModelsRoot as err:
            RELOADS.labels(outcome="refused").inc()
            log.error(f"reload announced by worker {origin} refused here: {err}")
            return
    try:
        result = await model.reload_model(app.state.holder, target, settings)
    except ApiError as err:
        log.error(f"reload announced by worker {origin} rejected here: {err.message}")
        return
    log.info(f"followed the reload of worker {origin}", extra={"model_version": result.model_version})


async def follow_reloads(app: FastAPI, marker: ReloadMarker, every_s: float) -> None:
    """Every ``every_s`` seconds: has another worker reloaded? (one ``stat`` of the marker file)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            announced = marker.pending()
            if announced is not None:
                await follow_marker(app, announced)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the watcher must outlive any one bad marker or failed load
            log.error(f"reload marker {marker.path}: {err}")


def observe_batch(texts: int, seconds: float) -> None:
    BATCH_TEXTS.observe(texts)
    BATCH_SECONDS.observe(seconds)


def make_batcher(holder: ModelHolder, settings: Settings) -> MicroBatcher:
    """The process's one dynamic batcher. It asks the holder for the predictor at every run, so a hot
    reload (POST /v1/admin/reload, SIGHUP) serves from the next run on and no run mixes two models."""
    return MicroBatcher(
        lambda: holder.predictor,
        max_batch=settings.batch_max_texts,
        max_wait_ms=settings.batch_max_wait_ms,
        max_queue=settings.batch_max_queued_texts,
        on_batch=observe_batch,
        concurrent_runs=lambda: holder.plan.runs,  # per loaded model (serving.run_plan), read before every run
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging()
        metrics_server = follower = None
        if settings.metrics_port:
            try:
                metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics_registry())
                log.info(f"metrics on {settings.metrics_host}:{settings.metrics_port}")
            except OSError as err:
                if multiproc_dir() is None or err.errno != errno.EADDRINUSE:
                    raise
                # several workers: the first one to bind serves every worker's metrics (merged)
                log.info(f"metrics port {settings.metrics_port} is served by another worker")
        predictor = await asyncio.to_thread(app.state.holder.load, settings.model_dir)
        await asyncio.to_thread(app.state.scorer.warmup)  # jieba's dictionary, before the first request
        model.publish_model_info(predictor)
        log.info("model loaded", extra={"model_version": predictor.version})
        for warning in app.state.scorer.clock.calendar.status()["warnings"]:
            log.warning(f"calendar: {warning}")
        _install_sighup(app)
        if settings.dynamic_batching:
            app.state.batcher = make_batcher(app.state.holder, settings)
        if app.state.reload_marker is not None:
            follower = asyncio.create_task(follow_reloads(app, app.state.reload_marker, settings.reload_poll_s))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with suppress(asyncio.CancelledError):
                    await follower
            if app.state.batcher is not None:
                await app.state.batcher.close()
                app.state.batcher = None
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            mark_worker_dead()  # several workers: this one's live gauges leave the merged metrics

    app = FastAPI(title="投诉分诊 Complaint Triage API", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = KeyRing.from_settings(settings)
    app.state.holder = ModelHolder(
        settings.threads,
        settings.canary_min_accuracy,
        settings.canary_min_critical_recall,
        settings.ort_allow_spinning,
        concurrent_runs=settings.batch_concurrent_runs,
        batching=settings.dynamic_batching,
    )
    app.state.background_tasks = set()
    app.state.reload_marker = ReloadMarker(settings.reload_marker) if settings.reload_marker else None
    app.state.batcher = None  # made in the lifespan when settings.dynamic_batching (one per process)
    app.state.gate = InferenceGate(settings.max_concurrent, settings.max_queue, settings.queue_timeout_ms / 1000)
    app.state.feedback_limiter = RateLimiter(settings.feedback_per_minute, settings.feedback_burst)
    app.state.scorer = EscalationScorer(load_policy(settings.escalation_policy))  # a bad policy fails here, at start-up
    app.state.volume = build_monitor(settings)
    install_error_handlers(app)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes, limits={"/v1/feedback": settings.feedback_max_body_bytes})
    app.add_middleware(RequestContext, max_request_id_chars=settings.max_request_id_chars)  # outermost: every response gets an id
    for router in (health.router, triage.router, model.router, feedback.router, alerts.router):
        app.include_router(router)
    if not settings.metrics_port:
        app.include_router(health.metrics_router)
    return app
