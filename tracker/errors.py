"""One table from domain errors to HTTP answers (the routes only raise)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from shoal.errors import AuthError, BadInput, Conflict, NotFound, RateLimited, ShoalError
from shoal.wire import BodyTooLarge
from tracker.respond import respond

_STATUS: list[tuple[type[ShoalError], int]] = [
    (BodyTooLarge, 413),
    (BadInput, 400),
    (NotFound, 404),
    (RateLimited, 429),
    (Conflict, 409),
]


def status_for(exc: ShoalError) -> int:
    if isinstance(exc, AuthError):
        return exc.status
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def install(app: FastAPI) -> None:
    async def on_shoal_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ShoalError)
        status = status_for(exc)
        request.app.state.coordinator.metrics.errors.labels(type(exc).__name__).inc()
        body = {"error": {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return respond(request, body, status, headers=headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        body = {"error": {"kind": "BadInput", "message": detail, "hint": None}}
        return JSONResponse(body, status_code=400)

    app.add_exception_handler(ShoalError, on_shoal_error)
    app.add_exception_handler(RequestValidationError, on_validation)
