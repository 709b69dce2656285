"""The one place errors become HTTP: every failure answers `{"error": {"code", "message"}}`.

Client mistakes are 4xx with a specific code; a server visionq depends on being down is 503 with
Retry-After; 500 is left for bugs and a broken installation, never for anything a client sent.
`STATUS` gives every code its status; the OpenAPI documentation of each route is read off it too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match

from visionq.errors import ErrorCode, Throttled, Unauthorized, VisionqError
from visionq.views import ErrorBody, ErrorOut

logger = logging.getLogger(__name__)

# Seconds a client should wait after a 503: a broker or database restart takes a few seconds, and
# clients retrying sooner only add load to a server that is coming back.
RETRY_AFTER_S: Final = 5

# The status of every code a response can carry (the others, `errors.JOB_ONLY_CODES`, appear only on
# failed jobs). An image's problem decides its status: 413/415 tell HTTP clients and proxies something
# specific; a model the request named but the cache lacks is the request's fault (422), a model that
# is there but broken is the installation's (500).
STATUS: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {
        ErrorCode.EMPTY: 400,
        ErrorCode.BAD_REQUEST: 400,
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.NOT_FOUND: 404,
        ErrorCode.METHOD_NOT_ALLOWED: 405,
        ErrorCode.CONFLICT: 409,
        ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
        ErrorCode.TOO_LARGE: 413,
        ErrorCode.NOT_AN_IMAGE: 415,
        ErrorCode.UNSUPPORTED_FORMAT: 415,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.TOO_MANY_QUEUED: 429,
        ErrorCode.CORRUPT: 422,
        ErrorCode.INVALID_REQUEST: 422,
        ErrorCode.UNKNOWN_CLASS: 422,
        ErrorCode.INVALID_CALLBACK_URL: 422,
        ErrorCode.UNKNOWN_MODEL: 422,
        ErrorCode.MODEL_NOT_FOUND: 422,
        ErrorCode.INTERNAL_ERROR: 500,
        ErrorCode.MODEL_ERROR: 500,
        ErrorCode.CHECKSUM_MISMATCH: 500,
        ErrorCode.SERVICE_UNAVAILABLE: 503,
        ErrorCode.BROKER_UNAVAILABLE: 503,
        ErrorCode.DATABASE_UNAVAILABLE: 503,
        ErrorCode.SOURCE_UNAVAILABLE: 503,
        ErrorCode.QUEUE_FULL: 503,
    }
)

# Codes for the errors Starlette raises itself (unknown route, wrong method, unparsable body).
_HTTP_CODES: Final = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries documenting that these statuses answer with ErrorOut, and with which codes."""
    entries: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        codes = ", ".join(f"`{code.value}`" for code, s in STATUS.items() if s == status)
        entries[status] = {"model": ErrorOut, "description": f"{HTTPStatus(status).phrase}: {codes}."}
    return entries


def error_response(
    status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def status_of(error: VisionqError) -> int:
    """The HTTP status of one of visionq's own errors (500 for a code no request should ever meet)."""
    return STATUS.get(error.code, 500)


async def _visionq_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VisionqError)
    return response_for(exc)


def response_for(exc: VisionqError) -> JSONResponse:
    """The response one of visionq's own errors answers with (also for middleware, outside routing)."""
    status = status_of(exc)
    if status == 503:
        logger.warning("%s: %s (%s)", exc.code.value, exc.message, exc.__cause__ or "no cause")
        return error_response(status, exc.code, exc.message, {"Retry-After": str(RETRY_AFTER_S)})
    if status == 500:
        logger.error("%s: %s", exc.code.value, exc.message)
    return error_response(status, exc.code, exc.message, _headers_of(exc))


def _headers_of(exc: VisionqError) -> dict[str, str] | None:
    if isinstance(exc, Throttled):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="visionq"'}
    return None


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        # ("body", "conf") -> "conf": where a field travelled is noise to the client.
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return error_response(422, ErrorCode.INVALID_REQUEST, "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    fallback = ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
    code = _HTTP_CODES.get(exc.status_code, fallback)
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code in (404, 405) and message == HTTPStatus(exc.status_code).phrase:
        message = f"{message}: {request.method} {request.url.path}"  # Starlette's routing said no
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, code, message, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method a route serves on the request's path, by the routes' own (Starlette) matching.

    Starlette's 405 lists only the first route matching the path, and `GET /v1/jobs/{id}` and
    `DELETE /v1/jobs/{id}` are two routes. A route that matches the path but not the method matches
    PARTIALly. FastAPI keeps included routers nested: `iter_route_contexts` walks all their routes.
    """
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback and re-raises after this; the client still gets the usual shape.
    return error_response(500, ErrorCode.INTERNAL_ERROR, "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into an ErrorOut response."""
    app.add_exception_handler(VisionqError, _visionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
