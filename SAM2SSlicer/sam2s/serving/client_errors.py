"""The errors of the sam2s tracking server's client (``sam2s.serving.client``, which re-exports
them): ``ServerError`` (an error answer, or no answer) and its kinds by HTTP status. Standard
library only.
"""

from __future__ import annotations

__all__ = ["AuthError", "ProtocolMismatchError", "ServerBusy", "ServerError", "ServerUnavailable", "SessionNotFound"]


class ServerError(RuntimeError):
    """The server answered with an error, or could not be reached (then ``status`` is None).

    Attributes:
        status: HTTP status code, or None when there was no answer.
        code: the server's short error code (e.g. ``"invalid_prompt"``), or ``"unavailable"``,
            ``"tls_error"``, ``"bad_response"`` for failures on this side.
        detail: the server's message (or what went wrong here).
    """

    def __init__(self, status: int | None, code: str, detail: str) -> None:
        super().__init__(detail if status is None else f"HTTP {status} ({code}): {detail}")
        self.status, self.code, self.detail = status, code, detail


class AuthError(ServerError):
    """401: the token is missing or wrong (check the token the server was started with)."""


class ProtocolMismatchError(ServerError):
    """The server speaks another protocol version than this client (426, or seen in ``/version``);
    the message names both versions and what to upgrade."""


class SessionNotFound(ServerError):
    """404 ``session_not_found``: the session was closed, expired (idle), the server restarted, or
    it belongs to another token. Create a new session."""


class ServerUnavailable(ServerError):
    """No answer: the server is not running or unreachable, the connection was refused or reset,
    or it timed out (``status`` None, ``code`` ``"unavailable"``)."""


class ServerBusy(ServerError):
    """409: the session runs a job (wait for it or cancel it), or the request conflicts with its
    state (e.g. an incomplete upload)."""
