"""What the tracking server's route modules share: the request's owner and the server's
``ServerState``, binary answers (``sam2s.serving.protocol`` messages) and the fields of binary
bodies. Part of ``sam2s.serving.server``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import Request, Response

from . import protocol
from .server_errors import ApiError
from .server_state import ServerState

__all__ = ["binary_answer", "bool_field", "decode_body", "int_field", "owner", "prompt_answer", "server_state"]


def owner(request: Request) -> str:
    """The owner id of the request's token (set by ``sam2s.serving.server_guard.Guard``)."""
    return request.scope["state"]["sam2s_owner"]


def server_state(request: Request) -> ServerState:
    """The ``ServerState`` of the application that received ``request`` (``create_app``)."""
    return request.app.state.sam2s


def binary_answer(header: dict, arrays: Sequence[np.ndarray] = ()) -> Response:
    """A binary answer: one protocol message of ``header`` and ``arrays``."""
    return Response(protocol.encode(header, arrays), media_type="application/octet-stream")


def prompt_answer(frame: int, obj_id: int, logits: np.ndarray, want_logits: bool) -> Response:
    """The answer of a prompt: ``{"frame", "obj_id"}`` and the object's ``(H, W)`` bool mask on the
    frame, or its float32 logits when ``want_logits``."""
    out = np.asarray(logits, dtype=np.float32)
    return binary_answer({"frame": frame, "obj_id": obj_id}, [out if want_logits else out > 0])


def decode_body(data: bytes) -> tuple[dict, list[np.ndarray]]:
    """``(header, arrays)`` of a binary body; 422 ``invalid_request`` naming the problem."""
    try:
        return protocol.decode(data)
    except protocol.ProtocolError as error:
        raise ApiError(422, "invalid_request", f"body: {error}") from None


def int_field(header: dict, name: str, default: Any = ...) -> Any:
    """The integer field ``name`` of a binary body's header (``default`` when absent; without a
    default, 422 when absent); 422 for a value that is not an integer."""
    value = header.get(name, default)
    if value is ...:
        raise ApiError(422, "invalid_request", f"body field {name!r} is missing; give it as an integer")
    if value is not default and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(422, "invalid_request", f"body field {name!r} must be an integer, got {value!r:.50}")
    return value


def bool_field(header: dict, name: str, default: bool) -> bool:
    """The boolean field ``name`` of a binary body's header (``default`` when absent); 422 otherwise."""
    value = header.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(422, "invalid_request", f"body field {name!r} must be true or false, got {value!r:.50}")
    return value
