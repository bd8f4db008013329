"""Client of the sam2s tracking server (``sam2s.serving.server``): standard library, numpy and h11
(HTTP/1.1 framing, ``sam2s.serving.connection``) only, so it imports without torch, FastAPI or
uvicorn (e.g. in 3D Slicer's GUI Python).

Typical use::

    client = Client("http://127.0.0.1:8765", token)
    upload = client.upload_frames(frames)                      # (T, H, W, 3) uint8 RGB
    session = client.create_session({"upload": upload}, {"engine": "sam2", "config": "sam2.1_hiera_t"})
    mask = session.add_points(0, 1, [[451, 137]], [1])         # (H, W) bool
    job = session.start_job([(0, session.num_frames - 1, False)])
    while not job.finished:                                    # e.g. from a GUI timer, one poll per tick
        update = job.poll()                                    # one HTTP request, never waits for tracking
        for frame_idx, obj_ids, masks in update.frames:        # masks: (len(obj_ids), H, W) bool
            ...
    session.close()

Every method above is one or more blocking HTTP requests over kept-alive connections; none waits
for tracking to finish. A GUI that must never wait uses their ``*_steps`` forms (``upload_frames_steps``,
``create_session_steps``, ``RemoteSession.steps(...)``, ``RemoteRun.ready_steps``) with a
``sam2s.serving.steps.Stepper`` ticked from its timer: each request is then a :class:`Call` whose
``ready()`` never blocks, and a stalled server is an error after the call's timeout (seconds for
polls, cancel and close: ``QUICK_TIMEOUT_S``). Coordinates are pixels of the session's frames (x
right, y down), frame indices start at 0, object ids are 1..254 (``sam2s.session``).

Errors: every failure is a ``ServerError`` (status, code, detail): ``AuthError`` (401, wrong or
missing token), ``ProtocolMismatchError`` (426, or ``/version`` of another protocol),
``SessionNotFound`` (404 ``session_not_found``: closed, expired or another token's),
``ServerBusy`` (409: a job runs, or the tracker is busy), ``ServerUnavailable`` (no connection:
not running, unreachable, reset, timed out). Other statuses keep the server's ``code``
(``invalid_prompt`` 400, ``object_not_found`` 404, ``path_not_allowed`` / ``shm_not_allowed`` 403,
``too_large`` / ``quota_exceeded`` 413, ``invalid_request`` / ``limit_exceeded`` 422,
``too_many_sessions`` 429, ``internal_error`` 500, ``insufficient_memory`` 507 ...).

Frames reach a server on the same machine without HTTP through shared memory:
``create_shared_frames`` copies them into a block whose name is ``SHARED_FRAMES_PREFIX`` plus a
random secret, the only names a server attaches.

``RemoteSession``, ``RemoteRun``, ``RemoteJob`` and ``JobUpdate`` live in ``sam2s.serving.remote``
and the errors in ``sam2s.serving.client_errors``; this module re-exports them.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import ssl
import urllib.parse
from typing import Any, Callable

import h11
import numpy as np

from . import protocol
from .client_errors import (
    AuthError,
    ProtocolMismatchError,
    ServerBusy,
    ServerError,
    ServerUnavailable,
    SessionNotFound,
)
from .connection import Answer, ConnectionPool, Exchange
from .protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from .remote import TERMINAL_STATUSES as TERMINAL_STATUSES  # re-exported: job statuses after which nothing comes
from .remote import JobUpdate, RemoteJob, RemoteRun, RemoteSession, path_segment
from .steps import Steps, drive

__all__ = [
    "SHARED_FRAMES_PREFIX",
    "AuthError",
    "Call",
    "Client",
    "JobUpdate",
    "ProtocolMismatchError",
    "RemoteJob",
    "RemoteRun",
    "RemoteSession",
    "ServerBusy",
    "ServerError",
    "ServerUnavailable",
    "SessionNotFound",
    "UploadCancelled",
    "create_shared_frames",
    "create_shared_frames_steps",
    "is_shared_frames_name",
]


SHARED_FRAMES_PREFIX = "sam2s_"
"""Name prefix of the shared-memory blocks a tracking server attaches (``create_shared_frames``)."""

_SHARED_SECRET_BYTES = 11  # 22 hex digits: 28-character names, within macOS's 31 (with the leading '/')
_SHARED_NAME = re.compile(re.escape(SHARED_FRAMES_PREFIX) + f"[0-9a-f]{{{2 * _SHARED_SECRET_BYTES}}}")

_MESSAGE_OVERHEAD = 4096  # bytes of a chunk's message besides the frames (prefix, JSON header)

QUICK_TIMEOUT_S = 5.0
"""Seconds a poll, a cancel, a close or a version check may take (``Client.quick_timeout``): the
server answers these at once, so a longer wait means it stalled (a GUI shows an error then)."""

GUI_CHUNK_BYTES = 8 * 2**20
"""Frame bytes per upload request of ``upload_frames_steps`` (one chunk per GUI tick at most)."""


class Client:
    """Connection settings of one tracking server; creates uploads and sessions.

    Args:
        url: the server's base URL, ``http://HOST:PORT`` or ``https://HOST:PORT`` (optionally
            with a path prefix, e.g. behind a reverse proxy), as on the server's ready line.
        token: one of the server's tokens (sent as ``Authorization: Bearer TOKEN``).
        timeout: seconds per socket operation (connect, send, receive) of a request.
        ssl_context: for ``https://``: the ``ssl.SSLContext`` to verify the server with; default
            ``ssl.create_default_context()`` (system CAs, host name checked, as urllib).

    Attributes:
        quick_timeout: seconds for the requests a server answers at once (polls, cancel, close,
            version): ``QUICK_TIMEOUT_S`` or ``timeout`` if shorter.

    Raises:
        ValueError: a URL that is not ``http(s)://HOST[:PORT][/PREFIX]``, or an empty token.
    """

    def __init__(self, url: str, token: str, timeout: float = 60, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"server URL {url!r} must look like http://HOST:PORT or https://HOST:PORT")
        if not token or not isinstance(token, str):
            raise ValueError("the token is empty: pass the server's token (its SAM2S_SERVER_TOKEN or ready line)")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self._prefix = parts.path.rstrip("/")
        self.quick_timeout = min(QUICK_TIMEOUT_S, self.timeout)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._pool = ConnectionPool(parts.scheme, parts.hostname, port, ssl_context)
        self._version: dict | None = None
        self._background: list[Call] = []

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ---------------------------------------------------------------- HTTP
    def begin(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
        binary: bool = False,
        timeout: float | None = None,
    ) -> Call:
        """Send one request without waiting for its answer (``sam2s.serving.connection.Exchange``
        over a kept-alive connection); the returned :class:`Call` finishes it.

        Args:
            method: ``"GET"``, ``"POST"``, ``"PUT"``, ``"DELETE"``.
            path: the endpoint path, e.g. ``"/sessions"`` (after the URL's prefix).
            json_body: a JSON body (sent as ``application/json``), or None.
            body: a binary body (a ``sam2s.serving.protocol`` message), or None.
            query: query parameters.
            binary: the answer is a protocol message: the call's result is ``(header, arrays)``.
            timeout: seconds until the answer must be complete (default ``self.timeout``).

        Raises:
            ServerUnavailable: the server's host name cannot be resolved or the connection is
                refused at once (other failures come from the call's ``result()``).
        """
        target = self._prefix + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        headers = [
            ("Authorization", f"Bearer {self.token}"),
            (PROTOCOL_HEADER, str(PROTOCOL_VERSION)),
            ("Accept", "application/octet-stream" if binary else "application/json"),
        ]
        data = body
        if json_body is not None:
            data = json.dumps(json_body, allow_nan=False).encode("utf-8")
            headers.append(("Content-Type", "application/json"))
        elif body is not None:
            headers.append(("Content-Type", "application/octet-stream"))
        if data is None and method in ("POST", "PUT"):
            data = b""
        self._background = [call for call in self._background if not call.ready()]
        try:
            exchange = Exchange(self._pool, method, target, headers, data, self.timeout if timeout is None else timeout)
        except OSError as error:
            raise self._unavailable(error) from error
        return Call(self, exchange, path, binary)

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
        binary: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and wait for its decoded answer (:meth:`begin` then ``Call.wait``).

        Returns:
            The JSON answer, or ``(header, arrays)`` with ``binary``.

        Raises:
            ServerError and its subclasses (see the module docstring).
        """
        return self.begin(method, path, json_body, body, query, binary, timeout).wait()

    def send_and_forget(self, call: Call) -> None:
        """Let ``call`` finish in the background: it is advanced by the next requests (``begin``)
        and its answer or error is ignored (e.g. closing a session while the GUI goes on)."""
        if not call.ready():
            self._background.append(call)

    def close(self) -> None:
        """Close the kept-alive connections (a later request opens a new one)."""
        for call in self._background:
            call.abandon()
        self._background.clear()
        self._pool.close()

    @property
    def connections_opened(self) -> int:
        """Connections opened so far (one serves many requests while it stays alive)."""
        return self._pool.opened

    def _unavailable(self, error: BaseException) -> ServerError:
        if isinstance(error, ssl.SSLError):
            return ServerError(
                None,
                "tls_error",
                f"the TLS connection to {self.url} failed ({error}): check the server's certificate (its host "
                "name and issuer), or pass Client(..., ssl_context=...) that trusts it",
            )
        if isinstance(error, TimeoutError):
            return ServerUnavailable(
                None,
                "timeout",
                f"the sam2s server at {self.url} stopped answering ({error}); check that it still runs (its log, "
                "its machine's load) and the network",
            )
        return ServerUnavailable(
            None,
            "unavailable",
            f"the sam2s server at {self.url} is not running or unreachable ({type(error).__name__}: {error}); "
            "start it (python -m sam2s.serving.server) or check the URL, the network and the firewall",
        )

    def _decode(self, answer: Answer, path: str, binary: bool) -> Any:
        if answer.status >= 400:
            raise self._error(answer.status, answer.body)
        try:
            return protocol.decode(answer.body, copy=True) if binary else json.loads(answer.body)
        except (protocol.ProtocolError, ValueError) as error:
            raise ServerError(
                answer.status,
                "bad_response",
                f"the answer of {self.url}{path} could not be read ({error}); is this URL a sam2s server?",
            ) from error

    def _error(self, status: int, payload: bytes) -> ServerError:
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if isinstance(answer, dict) and "detail" in answer:
            detail, code = str(answer["detail"]), str(answer.get("code") or "http_error")
        else:
            detail = payload[:300].decode("utf-8", "replace").strip() or f"HTTP {status} without a message"
            code = "http_error"
        if status == 401:
            return AuthError(status, code, detail)
        if status == 426:
            return ProtocolMismatchError(status, code, detail)
        if status == 404 and code == "session_not_found":
            return SessionNotFound(status, code, detail)
        if status == 409:
            return ServerBusy(status, code, detail)
        return ServerError(status, code, detail)

    # ---------------------------------------------------------------- server
    def health(self) -> bool:
        """True when the server answers ``GET /health`` with ``{"status": "ok"}``, False when it
        cannot be reached or answers otherwise (never raises)."""
        try:
            return self.request("GET", "/health") == {"status": "ok"}
        except ServerError:
            return False

    def version(self) -> dict:
        """The server's ``GET /version``: ``{"protocol", "sam2s", "torch", "devices", "max_upload_bytes",
        ...}``.

        Raises:
            ProtocolMismatchError: the server's protocol is not this client's ``PROTOCOL_VERSION``
                (the message names both and what to upgrade). ServerError: see the module docstring.
        """
        return drive(self.version_steps())

    def version_steps(self) -> Steps:
        """:meth:`version` as steps (``sam2s.serving.steps``), with ``quick_timeout``."""
        info = yield self.begin("GET", "/version", timeout=self.quick_timeout)
        server = info.get("protocol") if isinstance(info, dict) else None
        if server != PROTOCOL_VERSION:
            if isinstance(server, int) and server > PROTOCOL_VERSION:
                upgrade = "upgrade the client (update the SAM2SSlicer extension / the sam2s package)"
            else:
                upgrade = "upgrade the server (install the same sam2s version on the server machine and restart it)"
            raise ProtocolMismatchError(
                None,
                "protocol_mismatch",
                f"the server at {self.url} speaks SAM2S protocol {server} but this client speaks protocol "
                f"{PROTOCOL_VERSION}: {upgrade}",
            )
        self._version = info
        return info

    def upload_frames(
        self,
        frames: Any,
        progress: Callable[[int, int], None] | None = None,
        chunk_bytes: int = 64 * 2**20,
    ) -> str:
        """Send frames to the server in chunks; returns the upload id for ``create_session({"upload": id}, ...)``.

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB array (row y down, column x right), or a
                ``sam2s.FrameSource`` (``len``, ``height``, ``width``, ``get(t)``), decoded one
                chunk at a time (the video is never held whole here).
            progress: called as ``progress(frames_sent, T)`` after each chunk.
            chunk_bytes: largest chunk body in bytes (at least one frame per chunk; also kept under
                the server's ``max_upload_bytes``).

        Returns:
            The upload id (valid until used by a session, deleted or expired).

        Raises:
            ValueError: not a ``(T, H, W, 3)`` uint8 array with T, H, W >= 1.
            ServerError: e.g. 413 ``too_large`` (the clip exceeds the server's limit), 429.
        """
        return drive(self.upload_frames_steps(frames, progress, chunk_bytes))

    def upload_frames_steps(
        self,
        frames: Any,
        progress: Callable[[int, int], None] | None = None,
        chunk_bytes: int = GUI_CHUNK_BYTES,
        cancel: Callable[[], bool] | None = None,
    ) -> Steps:
        """:meth:`upload_frames` as steps (``sam2s.serving.steps``): one chunk request per step, of
        at most ``chunk_bytes`` (default ``GUI_CHUNK_BYTES``). ``cancel()`` True stops between
        chunks: the upload is deleted on the server and ``UploadCancelled`` raised."""
        if isinstance(frames, np.ndarray):
            _check_frames(frames)
            shape = frames.shape

            def chunk_of(begin: int, end: int) -> np.ndarray:
                return frames[begin:end]

        else:
            shape = (len(frames), int(frames.height), int(frames.width), 3)

            def chunk_of(begin: int, end: int) -> np.ndarray:
                return np.stack([np.asarray(frames.get(t), dtype=np.uint8) for t in range(begin, end)])

        if self._version is None:
            yield from self.version_steps()
        limit = self._version.get("max_upload_bytes") or chunk_bytes
        frame_bytes = math.prod(shape[1:])
        per_chunk = max(1, (min(int(chunk_bytes), int(limit)) - _MESSAGE_OVERHEAD) // frame_bytes)
        total = shape[0]
        upload = (yield self.begin("POST", "/uploads", json_body={"shape": list(shape)}))["upload"]
        try:
            for start in range(0, total, per_chunk):
                if cancel is not None and cancel():
                    raise UploadCancelled(f"the upload was cancelled after {start} of {total} frames")
                chunk = chunk_of(start, min(total, start + per_chunk))
                yield self.begin("PUT", f"/uploads/{upload}", body=protocol.encode({}, [chunk]), query={"start": start})
                if progress is not None:
                    progress(start + len(chunk), total)
        except BaseException:
            # deleted without waiting for the answer (the server frees it; expiry does otherwise)
            with contextlib.suppress(ServerError):
                self.begin("DELETE", f"/uploads/{upload}", timeout=self.quick_timeout).ready()
            raise
        return upload

    def create_session(
        self, frames: dict, model: dict, memory: str = "sam2", memory_params: dict | None = None
    ) -> RemoteSession:
        """Open a tracking session on the server.

        Args:
            frames: ``{"upload": id}`` (from ``upload_frames``), ``{"path": server path,
                "frame_indices": [...], "size": [W, H]}`` (indices and size optional; the path must
                lie under the server's ``--allow-path`` roots), or ``{"shm": name, "shape": [T, H,
                W, 3]}`` (a ``multiprocessing.shared_memory`` block of this machine, kept open by
                the caller while the session lives).
            model: ``{"engine": "sam2" | "flow", "config": name, "checkpoint": server path |
                registry name | None, "image_size": int (optional: the checkpoint's training size
                on servers since issue 24; send a number to older ones), "device": "auto" | "cpu" ...,
                "precision": "auto" | "fp32" | "bf16"}`` (precision optional, ``"auto"`` when left
                out; send it only when it is not ``"auto"``, for servers older than the field)
                (flow: ``{"engine": "flow", "params": {...}}``).
            memory: ``"sam2"`` or ``"divemem"``; memory_params: ``DiveMem`` parameters.

        Returns:
            The ``RemoteSession``.

        Raises:
            ServerError: e.g. 403 (path outside the roots), 422 (malformed), 429 (too many sessions),
                400 (unreadable frames, unknown config, missing checkpoint).
        """
        return drive(self.create_session_steps(frames, model, memory, memory_params))

    def create_session_steps(
        self, frames: dict, model: dict, memory: str = "sam2", memory_params: dict | None = None
    ) -> Steps:
        """:meth:`create_session` as steps (``sam2s.serving.steps``): the model loads in the server
        while the caller's timer goes on."""
        body = {"frames": frames, "model": model, "memory": memory, "memory_params": dict(memory_params or {})}
        answer = yield self.begin("POST", "/sessions", json_body=body)
        return RemoteSession(self, answer["session"], answer["num_frames"], answer["height"], answer["width"])

    def list_sessions(self) -> list[dict]:
        """This token's open sessions: ``[{"session", "engine", "num_frames", "height", "width",
        "obj_ids", "jobs", "running_job"}, ...]``."""
        return self.request("GET", "/sessions")["sessions"]

    def session(self, session_id: str) -> RemoteSession:
        """Reattach to an open session of this token by id.

        Raises:
            SessionNotFound: it does not exist (any more) for this token.
        """
        info = self.request("GET", f"/sessions/{path_segment(session_id)}")
        session = RemoteSession(self, info["session"], info["num_frames"], info["height"], info["width"])
        session.objects.update(dict.fromkeys(int(k) for k in info.get("obj_ids") or ()))
        return session


class Call:
    """One request in flight (``Client.begin``): :meth:`ready` advances it without blocking,
    :meth:`result` decodes the answer, :meth:`wait` blocks for it (a ``sam2s.serving.steps`` call).

    Raises (from ``result`` / ``wait``): ``ServerError`` and its subclasses, as ``Client.request``.
    """

    def __init__(self, client: Client, exchange: Exchange, path: str, binary: bool) -> None:
        self.client, self.exchange, self.path, self.binary = client, exchange, path, binary

    def ready(self) -> bool:
        """True once the answer is complete or the request failed (never blocks)."""
        return self.exchange.ready()

    def result(self) -> Any:
        """The JSON answer, or ``(header, arrays)`` for a binary one."""
        try:
            answer = self.exchange.result()
        except (OSError, h11.ProtocolError) as error:  # ssl.SSLError is an OSError too
            raise self.client._unavailable(error) from error
        return self.client._decode(answer, self.path, self.binary)

    def wait(self) -> Any:
        """Block until :meth:`ready`, then :meth:`result`."""
        try:
            self.exchange.wait()
        except (OSError, h11.ProtocolError):
            pass  # result() raises it as a ServerError
        return self.result()

    def abandon(self) -> None:
        """Give up on the answer (its connection is closed)."""
        self.exchange.abandon()


class UploadCancelled(ServerError):
    """``upload_frames_steps`` stopped because its ``cancel()`` said so (nothing is left on the server)."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, "cancelled", detail)


def _check_frames(frames: Any) -> None:
    """Raise ``ValueError`` unless ``frames`` is a ``(T, H, W, 3)`` uint8 array with T, H, W >= 1."""
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[3] != 3
        or min(frames.shape) == 0
    ):
        found = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be a (T, H, W, 3) uint8 RGB array with T, H, W >= 1, got {found}")


def is_shared_frames_name(name: str) -> bool:
    """True when ``name`` is a name ``create_shared_frames`` gives: ``SHARED_FRAMES_PREFIX`` followed
    by 22 lowercase hexadecimal digits (the only shared-memory names a tracking server attaches)."""
    return isinstance(name, str) and _SHARED_NAME.fullmatch(name) is not None


def create_shared_frames(frames: np.ndarray) -> tuple[Any, dict]:
    """A shared-memory copy of ``frames`` for a tracking server on this machine
    (``create_session(spec, ...)``), without HTTP.

    The block is named ``SHARED_FRAMES_PREFIX`` plus a secret of 88 random bits
    (``secrets.token_hex``): a server attaches no other name, so a client cannot make it read
    another program's shared memory, and cannot guess the name of another client's block (on
    POSIX systems local users can still list ``/dev/shm``; the block itself is readable only by
    its owner).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB array (any memory layout; copied in C order).

    Returns:
        ``(block, spec)``: the ``multiprocessing.shared_memory.SharedMemory`` (keep it open while
        the session lives, then ``block.close()`` and ``block.unlink()``) and the session's
        frames spec ``{"shm": name, "shape": [T, H, W, 3]}``.

    Raises:
        ValueError: ``frames`` is not a ``(T, H, W, 3)`` uint8 array with T, H, W >= 1.
        OSError: the block cannot be created (e.g. ``/dev/shm`` is full).
    """
    return drive(create_shared_frames_steps(frames, chunk_bytes=max(1, getattr(frames, "nbytes", 1))))


def create_shared_frames_steps(frames: np.ndarray, chunk_bytes: int = 32 * 2**20) -> Steps:
    """:func:`create_shared_frames` as steps (``sam2s.serving.steps``): the frames are copied
    ``chunk_bytes`` at a time, giving the caller its turn (a GUI timer tick) between chunks; the
    block is removed when the steps are closed before the end."""
    from multiprocessing import shared_memory

    _check_frames(frames)
    name = SHARED_FRAMES_PREFIX + secrets.token_hex(_SHARED_SECRET_BYTES)
    block = shared_memory.SharedMemory(name=name, create=True, size=frames.nbytes)
    per_chunk = max(1, int(chunk_bytes) // max(1, math.prod(frames.shape[1:])))
    try:
        for start in range(0, frames.shape[0], per_chunk):
            if start:
                yield None
            end = min(frames.shape[0], start + per_chunk)
            np.ndarray((end - start, *frames.shape[1:]), np.uint8, block.buf, start * frames[0].nbytes)[...] = frames[
                start:end
            ]
    except BaseException:
        block.close()
        block.unlink()
        raise
    return block, {"shm": name, "shape": [int(n) for n in frames.shape]}
