"""Client of the sam2s tracking server (``sam2s.serving.server``): standard library (``http.client``, ``ssl``)
and numpy only, so it imports without torch, FastAPI or uvicorn (e.g. in 3D Slicer's GUI Python).

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

Every call is one blocking HTTP request (with ``timeout`` seconds per socket operation) on a new
connection; none waits for tracking to finish. Coordinates are pixels of the session's frames (x
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

import http.client
import io
import json
import math
import re
import secrets
import socket
import ssl
import urllib.parse
from typing import Any, Callable

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
from .protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from .remote import TERMINAL_STATUSES as TERMINAL_STATUSES  # re-exported: job statuses after which nothing comes
from .remote import JobUpdate, RemoteJob, RemoteRun, RemoteSession, path_segment

__all__ = [
    "SHARED_FRAMES_PREFIX",
    "AuthError",
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
    "create_shared_frames",
    "is_shared_frames_name",
]


SHARED_FRAMES_PREFIX = "sam2s_"
"""Name prefix of the shared-memory blocks a tracking server attaches (``create_shared_frames``)."""

_SHARED_SECRET_BYTES = 11  # 22 hex digits: 28-character names, within macOS's 31 (with the leading '/')
_SHARED_NAME = re.compile(re.escape(SHARED_FRAMES_PREFIX) + f"[0-9a-f]{{{2 * _SHARED_SECRET_BYTES}}}")

_MESSAGE_OVERHEAD = 4096  # bytes of a chunk's message besides the frames (prefix, JSON header)
_EXPECT_CONTINUE_BYTES = 64 * 2**10  # larger bodies wait for "100 Continue" (see _send_expecting_continue)
_CONTINUE_WAIT_S = 3.0


class Client:
    """Connection settings of one tracking server; creates uploads and sessions.

    Args:
        url: the server's base URL, ``http://HOST:PORT`` or ``https://HOST:PORT`` (optionally
            with a path prefix, e.g. behind a reverse proxy), as on the server's ready line.
        token: one of the server's tokens (sent as ``Authorization: Bearer TOKEN``).
        timeout: seconds per socket operation (connect, send, receive) of a request.
        ssl_context: for ``https://``: the ``ssl.SSLContext`` to verify the server with; default
            ``ssl.create_default_context()`` (system CAs, host name checked, as urllib).

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
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context
        self._version: dict | None = None

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ---------------------------------------------------------------- HTTP
    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
        binary: bool = False,
    ) -> Any:
        """Send one request and return the decoded answer.

        Args:
            method: ``"GET"``, ``"POST"``, ``"PUT"``, ``"DELETE"``.
            path: the endpoint path, e.g. ``"/sessions"`` (after the URL's prefix).
            json_body: a JSON body (sent as ``application/json``), or None.
            body: a binary body (a ``sam2s.serving.protocol`` message), or None.
            query: query parameters.
            binary: the answer is a protocol message: return ``(header, arrays)``.

        Returns:
            The JSON answer, or ``(header, arrays)`` with ``binary``.

        Raises:
            ServerError and its subclasses (see the module docstring).
        """
        target = self._prefix + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        headers = {
            "Authorization": f"Bearer {self.token}",
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
            "Accept": "application/octet-stream" if binary else "application/json",
            "Connection": "close",
        }
        data = body
        if json_body is not None:
            data = json.dumps(json_body, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif body is not None:
            headers["Content-Type"] = "application/octet-stream"
        if data is None and method in ("POST", "PUT"):
            data = b""
        conn = self._connection()
        try:
            if data is not None and len(data) > _EXPECT_CONTINUE_BYTES:
                response = _send_expecting_continue(conn, method, target, headers, data)
            else:
                conn.request(method, target, body=data, headers=headers)
                response = conn.getresponse()
            payload = response.read()
        except ssl.SSLError as error:
            raise ServerError(
                None,
                "tls_error",
                f"the TLS connection to {self.url} failed ({error}): check the server's certificate (its host "
                "name and issuer), or pass Client(..., ssl_context=...) that trusts it",
            ) from error
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timeout, DNS, closed early
            raise ServerUnavailable(
                None,
                "unavailable",
                f"the sam2s server at {self.url} is not running or unreachable ({type(error).__name__}: {error}); "
                "start it (python -m sam2s.serving.server) or check the URL, the network and the firewall",
            ) from error
        finally:
            conn.close()
        if response.status >= 400:
            raise self._error(response.status, payload)
        try:
            return protocol.decode(payload, copy=True) if binary else json.loads(payload)
        except (protocol.ProtocolError, ValueError) as error:
            raise ServerError(
                response.status,
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
        info = self.request("GET", "/version")
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
        if isinstance(frames, np.ndarray):
            _check_frames(frames)
            shape = frames.shape

            def chunk_of(begin: int, end: int) -> np.ndarray:
                return frames[begin:end]

        else:
            shape = (len(frames), int(frames.height), int(frames.width), 3)

            def chunk_of(begin: int, end: int) -> np.ndarray:
                return np.stack([np.asarray(frames.get(t), dtype=np.uint8) for t in range(begin, end)])

        limit = (self._version or self.version()).get("max_upload_bytes") or chunk_bytes
        frame_bytes = math.prod(shape[1:])
        per_chunk = max(1, (min(int(chunk_bytes), int(limit)) - _MESSAGE_OVERHEAD) // frame_bytes)
        total = shape[0]
        upload = self.request("POST", "/uploads", json_body={"shape": list(shape)})["upload"]
        try:
            for start in range(0, total, per_chunk):
                chunk = chunk_of(start, min(total, start + per_chunk))
                self.request("PUT", f"/uploads/{upload}", body=protocol.encode({}, [chunk]), query={"start": start})
                if progress is not None:
                    progress(start + len(chunk), total)
        except BaseException:
            try:
                self.request("DELETE", f"/uploads/{upload}")
            except ServerError:
                pass
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
                registry name | None, "image_size": int, "device": "auto" | "cpu" | "cuda" ...,
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
        body = {"frames": frames, "model": model, "memory": memory, "memory_params": dict(memory_params or {})}
        answer = self.request("POST", "/sessions", json_body=body)
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


class _Replay(io.RawIOBase):
    """A readable stream of ``prefix`` followed by what ``sock`` receives."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        self._prefix, self._sock = prefix, sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        return self._sock.recv_into(buffer)


class _ReplaySocket:
    """What ``http.client.HTTPResponse`` needs of a socket (``makefile``), replaying bytes already read."""

    def __init__(self, prefix: bytes, sock: socket.socket) -> None:
        self._prefix, self._sock = prefix, sock

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_Replay(self._prefix, self._sock))


def _send_expecting_continue(
    conn: http.client.HTTPConnection, method: str, target: str, headers: dict[str, str], data: bytes
) -> http.client.HTTPResponse:
    """Send a request with ``Expect: 100-continue`` and the body only after the server's ``100
    Continue``, so that an answer given before the body is read (401, 413, 426) arrives intact
    instead of a connection reset; without an interim answer within ``_CONTINUE_WAIT_S`` seconds
    (a server or proxy that ignores the header) the body is sent anyway."""
    conn.putrequest(method, target, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.putheader("Content-Length", str(len(data)))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    sock = conn.sock
    head = bytearray()
    sock.settimeout(_CONTINUE_WAIT_S)
    try:
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: nothing after the interim answer is consumed
            byte = sock.recv(1)
            if not byte:
                break
            head += byte
    except (socket.timeout, TimeoutError):
        if head:
            raise
    finally:
        sock.settimeout(conn.timeout)
    status = head.split(b"\r\n", 1)[0].split()
    if not head or (len(status) > 1 and status[1] == b"100"):
        conn.send(data)
        return conn.getresponse()
    response = http.client.HTTPResponse(_ReplaySocket(bytes(head), sock), method=method)
    response.begin()
    return response


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
    from multiprocessing import shared_memory

    _check_frames(frames)
    name = SHARED_FRAMES_PREFIX + secrets.token_hex(_SHARED_SECRET_BYTES)
    block = shared_memory.SharedMemory(name=name, create=True, size=frames.nbytes)
    try:
        np.ndarray(frames.shape, dtype=np.uint8, buffer=block.buf)[...] = frames
    except BaseException:
        block.close()
        block.unlink()
        raise
    return block, {"shm": name, "shape": [int(n) for n in frames.shape]}
