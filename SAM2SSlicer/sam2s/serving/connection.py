"""HTTP/1.1 exchanges with a tracking server that never block the caller: one request and its
answer advance by :meth:`Exchange.ready` (a few milliseconds of socket work at most, then it
returns), or :meth:`Exchange.wait` blocks until the answer for callers that may wait.

A GUI without usable Python threads (3D Slicer: PythonQt holds the GIL while Qt idles) sends a
request and asks ``ready()`` from its timer; a stalled or unreachable server then costs the GUI
nothing but a timeout error once the exchange's deadline passes. ``sam2s.serving.client.Client``
sends every request through here (its blocking ``request`` is ``begin(...).wait()``), over
kept-alive connections (one per request in flight; an idle one is reused, so a GUI that polls
every 100 ms keeps one connection and, over HTTPS, one TLS handshake).

The HTTP/1.1 framing is h11's (https://h11.readthedocs.io: a sans-I/O state machine, the one
uvicorn serves with); the sockets are non-blocking (``socket.setblocking(False)``; TLS through
``ssl.SSLContext.wrap_socket(..., do_handshake_on_connect=False)``, its ``SSLWantReadError`` /
``SSLWantWriteError`` meaning "not yet"). Only the host name lookup (``socket.getaddrinfo``, for a
name that is not an address) may block, once per new connection.

Errors (from ``ready``, ``wait`` or ``result``): ``OSError`` subclasses for the network
(``ConnectionError``, ``TimeoutError`` past the deadline), ``ssl.SSLError``, and
``h11.RemoteProtocolError`` for an answer that is not HTTP; the client turns them into its
``ServerError`` kinds.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import h11

__all__ = ["Answer", "ConnectionPool", "Exchange", "EXPECT_CONTINUE_BYTES", "CONTINUE_WAIT_S"]

EXPECT_CONTINUE_BYTES = 64 * 2**10
"""Bodies larger than this are sent with ``Expect: 100-continue``: an answer the server gives
before reading the body (401, 413, 426) then arrives intact instead of a connection reset."""

CONTINUE_WAIT_S = 3.0
"""Seconds to wait for ``100 Continue`` before sending the body anyway (a server or proxy that
ignores the header; RFC 9110 section 10.1.1)."""

STEP_S = 0.005
"""Socket work one ``ready()`` call may do, in seconds, before it returns (large bodies go out and
come in over several calls)."""

_READ_BYTES = 256 * 2**10


@dataclass
class Answer:
    """A complete HTTP answer: ``status`` (e.g. 200), ``headers`` (lower-case names, as h11 gives
    them: ``[(b"content-type", b"application/json"), ...]``) and the ``body`` bytes."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


class _Connection:
    """One socket to the server with its h11 state; reused for the next request when both sides
    finished the last one and neither asked to close."""

    def __init__(self, scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self.h11 = h11.Connection(h11.CLIENT)
        self.connected = False  # TCP connect and TLS handshake done
        self.used = 0  # requests sent on it

    def open(self) -> None:
        """Start a non-blocking connect (``connect_ex``); :meth:`finish_connect` completes it."""
        info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(info[4])
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, getattr(errno, "WSAEWOULDBLOCK", -1)):
            sock.close()
            raise ConnectionRefusedError(
                code, f"cannot connect to {self.host}:{self.port}: {errno.errorcode.get(code)}"
            )
        self.sock = sock
        self._tcp_done = False

    def finish_connect(self) -> bool:
        """Advance the TCP connect and the TLS handshake; True once both are done."""
        sock = self.sock
        if not self._tcp_done:
            _, writable, _ = select.select([], [sock], [], 0)
            if not writable:
                return False
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ConnectionRefusedError(
                    code, f"cannot connect to {self.host}:{self.port}: {errno.errorcode.get(code)}"
                )
            self._tcp_done = True
            if self.scheme == "https":
                context = self.ssl_context or ssl.create_default_context()
                self.sock = sock = context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        if self.scheme == "https":
            try:
                sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
        self.connected = True
        return True

    def reusable(self) -> bool:
        """True when idle, alive and ready for the next request (the server did not close it: an
        idle kept-alive connection the server closed reads as end of file)."""
        if self.sock is None or self.h11.our_state is not h11.IDLE or self.h11.their_state is not h11.IDLE:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class ConnectionPool:
    """The idle kept-alive connections to one server (thread-safe: each exchange takes one)."""

    def __init__(self, scheme: str, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.scheme, self.host, self.port, self.ssl_context = scheme, host, port, ssl_context
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far (tests check reuse with it)

    def take(self) -> tuple[_Connection, bool]:
        """``(connection, reused)``: an idle live connection, else a new one (not yet connected)."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable():
                    return connection, True
                connection.close()
        return self.new(), False

    def new(self) -> _Connection:
        """A new connection (not yet connected)."""
        with self._lock:
            self.opened += 1
        return _Connection(self.scheme, self.host, self.port, self.ssl_context)

    def give(self, connection: _Connection) -> None:
        """Keep ``connection`` for the next request when it can serve one, else close it."""
        if connection.h11.our_state is h11.DONE and connection.h11.their_state is h11.DONE:
            try:
                connection.h11.start_next_cycle()
            except h11.LocalProtocolError:
                connection.close()
                return
            with self._lock:
                self._idle.append(connection)
            return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class Exchange:
    """One request and its answer over a connection of ``pool``, advanced without blocking.

    Args:
        pool: the server's ``ConnectionPool``.
        method, target: e.g. ``"GET"``, ``"/sessions?x=1"`` (the path with its query).
        headers: ``[(name, value), ...]`` besides Host and Content-Length (added here).
        body: the request body (``None``: none).
        timeout: seconds from now until the answer must be complete; past it the exchange fails
            with ``TimeoutError`` (a stalled server) and its connection is closed.

    A connection taken from the pool that turns out closed by the server before any answer (an
    idle keep-alive timeout) is replaced by a new one once, and the request is sent again.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float,
    ) -> None:
        self.pool, self.method, self.target = pool, method, target
        self.headers = [("Host", _host_header(pool)), *headers]
        if body is not None:
            self.headers.append(("Content-Length", str(len(body))))
        self.body = body
        self.timeout = float(timeout)
        self.deadline = time.monotonic() + self.timeout
        self._answer: Answer | None = None
        self._error: BaseException | None = None
        self._expecting = body is not None and len(body) > EXPECT_CONTINUE_BYTES
        self._start()

    # ------------------------------------------------------------------ public
    def ready(self) -> bool:
        """Advance the exchange for at most ``STEP_S`` of socket work, never waiting for the
        server; True once the answer is complete or the exchange failed (then :meth:`result`
        raises)."""
        if self._answer is not None or self._error is not None:
            return True
        try:
            self._advance(time.monotonic() + STEP_S)
        except BaseException as error:  # noqa: BLE001 - kept for result()
            self._fail(error)
            return True
        if self._answer is None and time.monotonic() > self.deadline:
            self._fail(TimeoutError(f"no complete answer within {self.timeout:g} s ({self.method} {self.target})"))
        return self._answer is not None or self._error is not None

    def result(self) -> Answer:
        """The answer of a finished exchange.

        Raises:
            RuntimeError: not finished yet (call :meth:`ready` until it returns True).
            OSError, ssl.SSLError, h11.RemoteProtocolError: what made it fail.
        """
        if self._error is not None:
            raise self._error
        if self._answer is None:
            raise RuntimeError("the exchange is not finished: call ready() until it returns True")
        return self._answer

    def wait(self) -> Answer:
        """Block until the answer is complete (sleeping in ``select`` on the socket) or the
        deadline passed; returns :meth:`result`."""
        while not self.ready():
            connection = self._connection
            sock = connection.sock if connection is not None else None
            pause = max(0.0, min(0.05, self.deadline - time.monotonic()))
            if sock is None:
                time.sleep(pause)
                continue
            wants_write = not connection.connected or bool(self._out)
            try:
                select.select([sock], [sock] if wants_write else [], [], pause)
            except (OSError, ValueError):  # closed meanwhile: ready() reports it
                pass
        return self.result()

    def abandon(self) -> None:
        """Give up on the answer (its connection is closed, not reused)."""
        if self._answer is None and self._error is None:
            self._fail(ConnectionAbortedError("the request was abandoned"))

    # ------------------------------------------------------------------ internals
    def _start(self) -> None:
        connection, self._reused = self.pool.take()
        self._begin(connection)

    def _begin(self, connection: _Connection) -> None:
        """Queue the request on ``connection`` (opening it when new)."""
        self._connection = connection
        h = connection.h11
        headers = self.headers + ([("Expect", "100-continue")] if self._expecting else [])
        self._out = bytearray(h.send(h11.Request(method=self.method, target=self.target, headers=headers)))
        self._body_queued, self._continue_deadline = False, None
        if not self._expecting:
            self._queue_body()
        self._received = False  # any answer byte seen (a reused connection is retried only before)
        self._status: int | None = None
        self._answer_headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        connection.used += 1
        if connection.sock is None:
            connection.open()

    def _queue_body(self) -> None:
        h = self._connection.h11
        if self.body:
            self._out += h.send(h11.Data(data=self.body))
        self._out += h.send(h11.EndOfMessage())
        self._body_queued = True

    def _advance(self, until: float) -> None:
        connection = self._connection
        if not connection.connected and not connection.finish_connect():
            return
        while time.monotonic() < until:
            progressed = self._send()
            if self._expecting and not self._body_queued and not self._out:
                if self._continue_deadline is None:
                    self._continue_deadline = time.monotonic() + CONTINUE_WAIT_S
                elif time.monotonic() > self._continue_deadline:
                    self._queue_body()  # no interim answer: send the body anyway
                    continue
            received = self._receive()
            if self._answer is not None or not (progressed or received):
                return

    def _send(self) -> bool:
        """Send what the socket takes now; True when something went out."""
        if not self._out:
            return False
        try:
            sent = self._connection.sock.send(memoryview(self._out)[: 4 * 2**20])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except (BrokenPipeError, ConnectionResetError) as error:
            if self._retryable():
                self._retry()
                return True
            if self._status is None:  # the server may have answered before reading it all (e.g. 413)
                self._out.clear()
                return False
            raise error
        del self._out[:sent]
        return sent > 0

    def _receive(self) -> bool:
        """Read what arrived and feed h11; True when something was read."""
        connection = self._connection
        try:
            data = connection.sock.recv(_READ_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except ConnectionResetError:
            if self._retryable():
                self._retry()
                return True
            raise
        if not data and self._retryable():
            self._retry()
            return True
        if data:
            self._received = True
        connection.h11.receive_data(data)
        while True:
            event = connection.h11.next_event()
            if event is h11.NEED_DATA:
                if not data:
                    raise ConnectionResetError("the server closed the connection before its answer was complete")
                return True
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 100 and self._expecting and not self._body_queued:
                    self._queue_body()
                continue
            if isinstance(event, h11.Response):
                self._status, self._answer_headers = event.status_code, list(event.headers)
                if self._expecting and not self._body_queued:
                    self._out.clear()  # answered before the body: it is never sent (the connection closes)
                    self._body_queued = True
            elif isinstance(event, h11.Data):
                self._chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._answer = Answer(self._status or 0, self._answer_headers, b"".join(self._chunks))
                self.pool.give(connection)
                self._connection = None
                return True
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the server closed the connection before its answer was complete")

    def _retryable(self) -> bool:
        return self._reused and not self._received

    def _retry(self) -> None:
        """The kept-alive connection was closed by the server before it answered: once more on a new one."""
        self._connection.close()
        self._reused = False
        self._begin(self.pool.new())

    def _fail(self, error: BaseException) -> None:
        self._error = error
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def _host_header(pool: ConnectionPool) -> str:
    host = f"[{pool.host}]" if ":" in pool.host else pool.host
    default = 443 if pool.scheme == "https" else 80
    return host if pool.port in (None, default) else f"{host}:{pool.port}"
