"""One JSON error shape for every failure: ``{"error", "error_type", "request_id"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.gate import ClientGone, QueueFull, Shed
from serving.observability import ERRORS

log = logging.getLogger("serving")


class ApiError(Exception):
    """Raised by routes and dependencies; turned into a JSON error response."""

    def __init__(self, status_code: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def request_id_of(request: Request) -> str:
    """The cleaned id ``RequestContext`` put in the request state (never the raw header: it may end in
    whitespace or hold bytes a header cannot echo)."""
    return getattr(request.state, "request_id", "") or ""


def error_response(request: Request, status: int, error_type: str, message: str, details=None, headers=None) -> JSONResponse:
    ERRORS.labels(error_type=error_type).inc()
    body = {"error": message, "error_type": error_type, "request_id": request_id_of(request)}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _clean_validation_errors(errors: list[dict]) -> list[dict]:
    # Drop the raw input (it may be a 100 k-char complaint: privacy and response size) and ctx objects.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.error_type, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _clean_validation_errors(exc.errors())
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return error_response(request, 422, "invalid_json", "request body is not valid JSON", details)
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return error_response(request, 422, "validation_error", f"{where}: {first['msg']}", details)

    @app.exception_handler(Shed)
    async def _shed(request: Request, exc: Shed) -> JSONResponse:
        if isinstance(exc, ClientGone):  # nobody is listening; 499 is what the access log shows
            return error_response(request, 499, "client_closed_request", "the client disconnected before its request could start")
        headers = {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, QueueFull):
            return error_response(
                request, 429, "overloaded", "too many requests waiting; retry after the Retry-After seconds", headers=headers
            )
        return error_response(
            request,
            503,
            "overloaded",
            "the request could not start within the queue deadline; retry after the Retry-After seconds",
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, kind, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": request_id_of(request)})
        return error_response(request, 500, "internal_error", "internal error; the request id is in the logs")
