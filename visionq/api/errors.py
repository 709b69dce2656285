"""The one place errors become HTTP: every failure answers `{"error": {"code", "message"}}`.

Client mistakes are 4xx with a specific code; a server visionq depends on being down is 503 with
Retry-After; 500 is left for bugs and a broken installation, never for anything a client sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPMethod, HTTPStatus
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from visionq.api.schemas import ErrorBody, ErrorOut
from visionq.errors import (
    Conflict,
    InvalidImage,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    ServiceUnavailable,
    VisionqError,
)

logger = logging.getLogger(__name__)

# Seconds a client should wait after a 503: a broker or database restart takes a few seconds, and
# clients retrying sooner only add load to a server that is coming back.
RETRY_AFTER_S: Final = 5

# An image's problem decides its status: 413/415 tell HTTP clients and proxies something specific.
_IMAGE_STATUS: Final = {
    "empty": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "too_large": 413,
    "corrupt": 422,
}

_HTTP_METHODS: Final = frozenset(m.value for m in HTTPMethod)

# Codes for the errors Starlette raises itself (unknown route, wrong method, unparsable body).
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_of(error: VisionqError) -> int:
    """The HTTP status of one of visionq's own errors."""
    if isinstance(error, InvalidImage):
        return _IMAGE_STATUS.get(error.code, 422)
    if isinstance(error, InvalidRequest | ModelNotFound):
        return 422  # only a model the request named can be missing here
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Conflict):
        return 409
    if isinstance(error, ServiceUnavailable):
        return 503
    return 500  # ModelError and the like: the installation is broken, not the request


async def _visionq_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VisionqError)
    status = status_of(exc)
    if status == 503:
        logger.warning("%s: %s", exc.code, exc.message)
        return error_response(status, exc.code, exc.message, {"Retry-After": str(RETRY_AFTER_S)})
    if status == 500:
        logger.error("%s: %s", exc.code, exc.message)
    return error_response(status, exc.code, exc.message)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        # ("body", "conf") -> "conf": where a field travelled is noise to the client.
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code in (404, 405) and message == HTTPStatus(exc.status_code).phrase:
        message = f"{message}: {request.method} {request.url.path}"  # Starlette's routing said no
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, code, message, headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path, read off the app's OpenAPI paths.

    Starlette's 405 lists only the first route matching the path, and `GET /v1/jobs/{id}` and
    `DELETE /v1/jobs/{id}` are two routes.
    """
    path = request.url.path
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
        if re.fullmatch(pattern, path):
            methods |= {verb.upper() for verb in operations if verb.upper() in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return sorted(methods)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return error_response(
        503,
        "database_unavailable",
        "The job database cannot be reached; retry later.",
        {"Retry-After": str(RETRY_AFTER_S)},
    )


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback and re-raises after this; the client still gets the usual shape.
    return error_response(500, "internal_error", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into an ErrorOut response."""
    app.add_exception_handler(VisionqError, _visionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for db_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(db_error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
