"""The client's HTTP exchanges never block their caller (``sam2s.serving.connection``), keep one
connection alive across requests, and give a stalled server's error after the call's timeout.

Servers here are real sockets: a listener that accepts and never answers (a stalled server), a
listener that answers each request and then closes its side (an idle keep-alive timeout), and the
tracking server itself (``sam2s.serving.server`` in a child process, started as the Slicer module
starts it).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sam2s.serving.client import Client, ServerUnavailable
from sam2s.serving.steps import Stepper

TOKEN = "t" * 40


@pytest.fixture(scope="module")
def server():
    """A local tracking server (``backends.LocalServer``, as the Slicer module starts it)."""
    from SAM2SSlicerLib.backends import LocalServer

    local = LocalServer()
    yield local
    local.stop()


def _listener(answer: bytes | None):
    """A loopback listener in a thread: each accepted connection reads one request head and gets
    ``answer`` then a close (``None``: nothing, ever: a stalled server). Returns ``(port, stop)``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stopping.is_set():
            try:
                conn, _ = sock.accept()
            except (socket.timeout, OSError):
                continue
            held.append(conn)
            if answer is None:
                continue
            data = b""
            conn.settimeout(5)
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            conn.sendall(answer)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()

    return sock.getsockname()[1], stop


def test_a_stalled_server_never_blocks_the_caller_and_fails_after_the_timeout():
    """Every ``ready()`` of a request to a server that accepts and never answers returns at once;
    the call fails with ``ServerUnavailable`` (code ``timeout``) once its 1 s timeout passed."""
    port, stop = _listener(None)
    try:
        client = Client(f"http://127.0.0.1:{port}", TOKEN, timeout=1.0)
        call = client.begin("GET", "/version")
        longest, start = 0.0, time.monotonic()
        while True:
            t = time.perf_counter()
            done = call.ready()
            longest = max(longest, time.perf_counter() - t)
            if done:
                break
            time.sleep(0.01)
        waited = time.monotonic() - start
        with pytest.raises(ServerUnavailable, match="stopped answering") as error:
            call.result()
        assert error.value.code == "timeout"
        print(f"\nstalled server: failed after {waited:.2f} s, longest ready() {longest * 1000:.2f} ms")
        assert 1.0 <= waited < 2.0
        assert longest < 0.02
    finally:
        stop()


def test_steps_on_a_stalled_server_end_with_its_error_without_waiting():
    """A ``Stepper`` over ``version_steps`` of a stalled server: each ``advance`` returns at once,
    and the steps end with the timeout error."""
    port, stop = _listener(None)
    try:
        client = Client(f"http://127.0.0.1:{port}", TOKEN, timeout=1.0)
        stepper = Stepper(client.version_steps())
        longest = 0.0
        while not stepper.done:
            t = time.perf_counter()
            stepper.advance()
            longest = max(longest, time.perf_counter() - t)
            time.sleep(0.01)
        assert isinstance(stepper.error, ServerUnavailable) and stepper.error.code == "timeout"
        assert longest < 0.02
    finally:
        stop()


def test_a_connection_the_server_closed_while_idle_is_replaced():
    """A server that closes each connection after its answer (as uvicorn does after its keep-alive
    timeout): the next request opens a new connection and succeeds."""
    body = b'{"status": "ok"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    port, stop = _listener(answer)
    try:
        client = Client(f"http://127.0.0.1:{port}", TOKEN, timeout=5.0)
        for _ in range(3):
            assert client.request("GET", "/health") == {"status": "ok"}
            time.sleep(0.05)  # the server's close arrives
        assert client.connections_opened == 3
    finally:
        stop()


def test_requests_to_the_tracking_server_share_one_kept_alive_connection(server):
    """Twenty requests one after the other (as a GUI's polls) use one connection."""
    url, token = server.ensureRunning()
    client = Client(url, token)
    for _ in range(20):
        assert client.health()
    assert client.connections_opened == 1
    client.close()


def test_a_refused_connection_is_an_error_at_once():
    """Nothing listens: the call fails within its first steps, long before the timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    client = Client(f"http://127.0.0.1:{port}", TOKEN, timeout=30.0)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="not running or unreachable"):
        client.request("GET", "/version")
    assert time.monotonic() - start < 2.0
