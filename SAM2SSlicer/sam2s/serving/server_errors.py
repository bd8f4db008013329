"""The tracking server's error answers: ``ApiError`` (an HTTP error answered as JSON ``{"detail",
"code", ...}``), ``engine_errors`` (the engine's exceptions as ``ApiError``), and the application's
exception handlers (``add_error_handlers``: every failure becomes such a JSON answer, never a bare
500). Part of ``sam2s.serving.server`` (needs FastAPI)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..checkpoints import CheckpointError
from ..frames import FrameSourceError
from ..session import PromptError, TrackerBusyError

__all__ = ["ApiError", "add_error_handlers", "engine_errors", "json_error", "validation_message"]


class ApiError(HTTPException):
    """An HTTP error answered as JSON ``{"detail": detail, "code": code, **extra}``.

    Args:
        status: HTTP status code (400, 401, 403, 404, 409, 413, 422, 426, 429, ...).
        code: short machine-readable code, e.g. ``"session_not_found"``.
        detail: the message for people: what is wrong and how to fix it.
        extra: more JSON fields of the answer.
    """

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code
        self.extra = extra


def json_error(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """The JSON answer ``{"detail": detail, "code": code, **extra}`` with HTTP ``status``."""
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status, headers=headers)


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Turn the engine's errors into ``ApiError``: ``TrackerBusyError`` 409, ``PromptError`` 400,
    ``KeyError`` (unknown object) 404, other ``ValueError`` / ``IndexError`` / ``FileNotFoundError``
    (bad frames, checkpoint, parameters) 400, ``TypeError`` (bad parameter names) 422."""
    try:
        yield
    except ApiError:
        raise
    except TrackerBusyError as error:
        raise ApiError(409, "busy", str(error)) from error
    except PromptError as error:
        raise ApiError(400, "invalid_prompt", str(error)) from error
    except KeyError as error:
        raise ApiError(404, "object_not_found", str(error.args[0] if error.args else error)) from error
    except FileNotFoundError as error:
        raise ApiError(400, "file_not_found", str(error)) from error
    except (CheckpointError, FrameSourceError, ValueError, IndexError) as error:
        raise ApiError(400, "invalid_request", str(error)) from error
    except TypeError as error:
        raise ApiError(422, "invalid_request", f"invalid parameters: {error}") from error


def validation_message(errors: Sequence[dict]) -> str:
    """A one-line message naming the fields of a pydantic ``RequestValidationError``."""
    parts = []
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ())]
        where, field = (loc[0], ".".join(loc[1:])) if loc else ("request", "")
        if e.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({e.get('msg')})")
        elif where == "body" and not field:
            parts.append(f"body: {e.get('msg')} (send a JSON object)")
        else:
            parts.append(f"{where} field {field!r}: {e.get('msg')}" if field else f"{where}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as JSON ``{"detail", "code", ...}``: ``ApiError`` with its status
    and code, other HTTP errors (404 ``not_found``, 405 ``method_not_allowed``), malformed requests
    (422 ``invalid_request``, with ``errors``: the fields and their messages), and any unexpected
    exception (500 ``internal_error``, with its message)."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> Response:
        return json_error(error.status_code, error.code, str(error.detail), headers=error.headers, **error.extra)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return json_error(error.status_code, code, str(error.detail), headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        fields = [
            {"field": ".".join(str(x) for x in e.get("loc", ())), "message": str(e.get("msg"))} for e in errors[:20]
        ]
        return json_error(422, "invalid_request", validation_message(errors), errors=fields)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> Response:
        return json_error(500, "internal_error", f"internal server error: {type(error).__name__}: {error}")
