"""Errors of the HTTP surfaces: one exception type, and each surface's own body shape.

Routes raise `ApiError(status, code, message)` with the code in their surface's vocabulary (ASAPP's
"400-201", a Chime "BadRequestException", ...). Which shape the body takes is chosen by the path's
surface, so errors that no route raised (404 for an unknown path, 405, validation, a crash) are
answered in the shape the client of that surface expects. callscribe's own shape (native API, and
any path no surface claims) follows ASAPP's: `{"error": {"requestId", "code", "message"}}`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

DEFAULT_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal server error", 503: "Service Unavailable",
}

#: (status, code or None for the surface's generic code, message) -> the JSON body.
ErrorShape = Callable[[int, "str | None", str], dict[str, Any]]


class ApiError(Exception):
    """Raise from a route to answer with `status` and the surface's error body."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message or DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(status, "Error")
        self.headers = headers


def new_request_id() -> str:
    return str(uuid.uuid4())


def callscribe_shape(status: int, code: str | None, message: str) -> dict[str, Any]:
    return {"error": {"requestId": new_request_id(), "code": code or f"{status}-01", "message": message}}


class ErrorShapes:
    """The shape of each surface, by path prefix (longest first); callscribe's own otherwise."""

    def __init__(self, surfaces: Sequence[tuple[str, ErrorShape]] = ()) -> None:
        self._surfaces = sorted(surfaces, key=lambda s: -len(s[0]))

    def for_path(self, path: str) -> ErrorShape:
        for prefix, shape in self._surfaces:
            if path.startswith(prefix):
                return shape
        return callscribe_shape

    def response(self, path: str, status: int, code: str | None = None, message: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
        body = self.for_path(path)(status, code, message or DEFAULT_MESSAGES.get(status, "Error"))
        return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, surfaces: Sequence[tuple[str, ErrorShape]] = ()) -> ErrorShapes:
    """Answer every error of the app in the shape of the surface its path belongs to (returned, for
    answers made outside the routes)."""
    shapes = ErrorShapes(surfaces)

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return shapes.response(request.url.path, exc.status, exc.code, exc.message, exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return shapes.response(request.url.path, exc.status_code, None, str(exc.detail) if exc.detail else None,
                               getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "Bad request")
        return shapes.response(request.url.path, 400, None, message)

    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace on the wire; the log has it.
        log.exception("unhandled error")
        return shapes.response(request.url.path, 500, None, "Internal server error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unhandled)
    return shapes
