"""Domain errors as HTTP answers, by the error tree's one table (the routes only raise)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from shoal.errors import ShoalError
from tracker.respond import respond


def install(app: FastAPI) -> None:
    async def on_shoal_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ShoalError)
        status = exc.http_status
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
