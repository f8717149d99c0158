"""ASAPP-shaped errors: HTTP status plus {"error": {"requestId", "code", "message"}}.

Codes follow ../shared/specs/control-apis.md: the generic `<status>-01` codes and the
media-gateway codes 400-201/202/203, 409-201/202/203, 500-201.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_DEFAULT_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal server error", 503: "Service Unavailable",
}


class AsappError(Exception):
    """Raise from an ASAPP-surface route to answer with the ASAPP error shape."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message or _DEFAULT_MESSAGES.get(status, "Error"))
        self.status = status
        self.code = code or f"{status}-01"
        self.message = message or _DEFAULT_MESSAGES.get(status, "Error")
        self.headers = headers


def new_request_id() -> str:
    return str(uuid.uuid4())


def asapp_error_response(status: int, code: str | None = None, message: str | None = None,
                         headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"requestId": new_request_id(), "code": code or f"{status}-01",
                      "message": message or _DEFAULT_MESSAGES.get(status, "Error")}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _asapp_error(_: Request, exc: AsappError) -> JSONResponse:
    return asapp_error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return asapp_error_response(exc.status_code, None, str(exc.detail) if exc.detail else None,
                                getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "Bad request")
    return asapp_error_response(400, "400-01", message)


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    # Never a stack trace on the wire; the log has it.
    log.exception("unhandled error")
    return asapp_error_response(500, "500-01", "Internal server error")


def install_error_handlers(app) -> None:
    """Make every error of the app answer in the ASAPP shape (the default surface).

    Surfaces with their own shapes (memories, Chime) raise their own exception types and register
    their own handlers, which take precedence for those types.
    """
    app.add_exception_handler(AsappError, _asapp_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
