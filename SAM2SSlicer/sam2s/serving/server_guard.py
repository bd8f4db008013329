"""The tracking server's guard, a pure ASGI middleware that checks every request before the
application sees it: the token (401), the protocol version header (426) and the body size (413).
Part of ``sam2s.serving.server``."""

from __future__ import annotations

from typing import Any, Callable

from . import protocol
from .options import ENV_TOKEN, ServerLimits
from .server_errors import ApiError, json_error
from .server_state import ServerState

__all__ = ["Guard", "protocol_problem", "request_body_limit", "too_large"]

_MIN_BODY_LIMIT = 16 * 2**20  # request_body_limit's floor


def request_body_limit(limits: ServerLimits) -> int:
    """Largest body, in bytes, of a request other than an upload's frames (``PUT /uploads/{id}``,
    limited by ``max_upload_bytes``): room for a bit-packed mask of the largest frame
    (``max_frame_side ** 2 / 8``) plus 1 MiB, and for a JSON list of ``max_frames`` frame indices
    (12 bytes each), at least 16 MiB, at most ``max_upload_bytes``. A JSON body is parsed into
    Python objects many times its size, so it gets no more room than it can need."""
    need = max(_MIN_BODY_LIMIT, limits.max_frame_side**2 // 8 + 2**20, 12 * limits.max_frames)
    return min(limits.max_upload_bytes, need)


class Guard:
    """Checks every request before the application sees it: the token (401, before the body is
    read), the protocol header (426), ``Content-Length`` and the streamed body size (413:
    ``max_upload_bytes`` for an upload's frames, ``request_body_limit`` for the others)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == "/health" and method in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.lower(), value)
        owner = self.state.owner_of(headers.get(b"authorization"))
        if owner is None:
            given = "no" if b"authorization" not in headers else "a wrong"
            response = json_error(
                401,
                "unauthorized",
                f"this request has {given} token: send the header 'Authorization: Bearer TOKEN' with the server's "
                f"token (the {ENV_TOKEN} the server was started with, or the token on its ready line)",
                headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
            return await response(scope, receive, send)
        if path != "/version":
            problem = protocol_problem(headers.get(protocol.PROTOCOL_HEADER.lower().encode()))
            if problem is not None:
                response = json_error(
                    426, "protocol_mismatch", problem[0], headers={"Connection": "close"}, **problem[1]
                )
                return await response(scope, receive, send)
        upload = method == "PUT" and path.startswith("/uploads/")
        limit = self.state.limits.max_upload_bytes if upload else request_body_limit(self.state.limits)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                response = json_error(400, "invalid_request", "the Content-Length header is not a non-negative integer")
                return await response(scope, receive, send)
            if declared > limit:
                response = json_error(
                    413, "too_large", too_large(declared, limit, upload), headers={"Connection": "close"}
                )
                return await response(scope, receive, send)
        scope.setdefault("state", {})["sam2s_owner"] = owner
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(
                        413, "too_large", too_large(received, limit, upload), headers={"Connection": "close"}
                    )
            return message

        return await self.app(scope, counted_receive, send)


def too_large(size: int, limit: int, upload: bool = True) -> str:
    """The message of a 413 ``too_large`` answer: a body of at least ``size`` bytes over ``limit``
    (``upload``: an upload's frames, else any other request)."""
    if not upload:
        return (
            f"the request body is larger than this server's limit of {limit:,} bytes for requests other than an "
            f"upload's frames (at least {size:,} bytes): send frames by PUT /uploads/ID, and prompts and "
            "frame lists within the server's limits (GET /version)"
        )
    return (
        f"the request body is larger than this server's limit of {limit:,} bytes (at least {size:,} bytes): "
        "send the frames in smaller chunks (Client.upload_frames does), or restart the server with a larger "
        "--max-upload-gb"
    )


def protocol_problem(value: bytes | None) -> tuple[str, dict[str, Any]] | None:
    """None when ``value`` is this server's protocol version, else (message, extra fields)."""
    server = protocol.PROTOCOL_VERSION
    if value is None:
        return (
            f"the request has no {protocol.PROTOCOL_HEADER} header; this server speaks SAM2S protocol {server}: "
            "use a sam2s client (sam2s.serving.client.Client) of the same sam2s version as the server",
            {"server_protocol": server, "client_protocol": None},
        )
    try:
        client = int(value)
    except ValueError:
        client = None
    if client == server:
        return None
    if client is not None and client > server:
        upgrade = "upgrade the server (install the same sam2s version on the server machine and restart it)"
    else:
        upgrade = "upgrade the client (update the SAM2SSlicer extension / the sam2s package)"
    shown = value.decode("latin-1")[:20]
    return (
        f"this client speaks SAM2S protocol {shown} but the server speaks protocol {server}: {upgrade}",
        {"server_protocol": server, "client_protocol": client},
    )
