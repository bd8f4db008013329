"""The sam2s tracking server: tracking sessions over HTTP (FastAPI + uvicorn), for clients that cannot
track in their own process (3D Slicer's GUI Python cannot run worker threads) or that use a remote GPU.

Optional: it needs FastAPI and uvicorn (``pip install -e ".[server]"`` in a clone of the repository;
the ``flow`` engine and the resizing of server-side frames also need OpenCV); its client
(``sam2s.serving.client``) needs only the standard library and numpy. Start it with::

    python -m sam2s.serving.server --token-file TOKEN_FILE --port 0 --allow-path /data/videos

or ``sam2s serve`` with the same options (``sam2s.serving.options``, one definition for both). It
prints one line on stdout, ``SAM2S server listening on http://127.0.0.1:PORT`` (``https://``
with ``--ssl-certfile``; followed by `` token=TOKEN`` when it generated the token itself),
flushed, once it accepts connections, and writes the same line to ``--ready-file``. SIGTERM or
Ctrl+C shut it down gracefully (jobs cancelled, sessions closed) with exit status 0.

Rules (the details are in the docstrings below):

* Authentication: every endpoint except ``GET`` / ``HEAD /health`` needs ``Authorization: Bearer TOKEN``
  with one of the server's tokens (compared with ``hmac.compare_digest``); a missing or wrong
  token gets 401 before the body is read. A server on a non-loopback address needs explicit
  tokens of at least ``MIN_REMOTE_TOKEN_LENGTH`` characters. Sessions and uploads belong to the
  token that created them: for any other token they do not exist (404). Tokens come from
  ``--token-file`` (readable only by its owner), ``$SAM2S_SERVER_TOKEN`` or ``--token`` (which
  every user sees in ``ps``).
* Protocol: every request except ``GET /health`` and ``GET /version`` carries
  ``X-SAM2S-Protocol: 1`` (``sam2s.serving.protocol.PROTOCOL_VERSION``); another value gets 426 naming
  both versions and what to upgrade.
* Server-side paths (video files, frame folders, checkpoints) are used only under the
  ``allow_paths`` roots (symbolic links and ``..`` resolved first), else 403; without roots, no
  server-side path is accepted (clients upload frames or share memory instead).
* Shared memory: only blocks named by ``sam2s.serving.client.create_shared_frames``
  (``SHARED_FRAMES_PREFIX`` and a random secret) are attached; any other name gets 403
  ``shm_not_allowed`` before anything is opened.
* Limits (``ServerLimits``: defaults, command-line options; all listed in ``GET /version``):
  every size, count and index a request carries is checked before anything is allocated, and
  one beyond its limit gets 422 ``"limit_exceeded"`` naming the value, the limit and its option:
  the frame width and height of every source (``max_frame_side``: a path's ``size`` and its
  file's own size, a shared block's or an upload's ``shape``, each uploaded chunk),
  ``model.image_size`` (``max_image_size``), frames per session and ``frame_indices`` entries
  (``max_frames``), objects per session (``max_objects``, when a prompt would add one), passes
  per job (``max_passes``) and frames per job (``JOB_FRAMES_PER_SESSION_FRAME`` times the
  session's), clicks per prompt (``MAX_PROMPT_POINTS``). Memory: before a session is created
  (before its model is built) its bytes are estimated (``estimate_session_bytes``), and before
  an upload or a job its frames' or results' bytes; more than
  ``sam2s.resources.available_memory_bytes()`` gets 507 ``"insufficient_memory"`` with both
  figures (``needed_bytes``, ``available_bytes``). Bytes: an upload over ``max_upload_bytes``
  gets 413 ``"too_large"``, as does any other request body over ``request_body_limit`` (room
  for the largest mask or frame list, at least 16 MiB); a token whose uploads and sessions made from
  uploads would hold more than ``max_token_bytes`` gets 413 ``"quota_exceeded"``. Counts: more
  than ``max_sessions_per_token`` sessions (or uploads) per token get 429; a session or upload
  without a request for ``idle_timeout_s`` seconds is closed, and its id then gets 404 with
  ``"code": "session_not_found"`` (``"upload_not_found"``).
* Errors are JSON ``{"detail": message, "code": short_code}``, never a bare 500: malformed
  bodies 422 (the message names the field), values beyond a limit 422, invalid prompts 400,
  unknown objects 404, changes while a job runs 409, not enough memory 507, unexpected errors
  500 with the message.

Endpoints (JSON bodies unless "binary": a ``sam2s.serving.protocol`` message, ``application/octet-stream``):

==========================================================  ==================================================
``GET /health`` (or ``HEAD``)                               ``{"status": "ok"}`` (no token needed)
``GET /version``                                            ``{"protocol", "sam2s", "torch", "devices",
                                                            "precisions", "max_upload_bytes", ...}``
                                                            (every limit of ``ServerLimits``)
``POST /uploads`` ``{"shape": [T, H, W, 3]}`` (optional)    ``{"upload": id}``
``PUT /uploads/{id}?start=K`` binary: uint8 (n, H, W, 3)    frames K..K+n-1; ``{"upload", "received", ...}``
``DELETE /uploads/{id}``                                    drops the upload
``POST /sessions`` (see ``SessionRequest``)                 ``{"session", "num_frames", "height", "width"}``
``GET /sessions``, ``GET /sessions/{sid}``                  the token's sessions / one session's state
``POST /sessions/{sid}/objects/{oid}/points`` / ``box``     binary ``{"frame", "obj_id"}`` + (H, W) bool
``POST /sessions/{sid}/objects/{oid}/mask`` binary          mask, or float32 logits with ``"logits": true``
``DELETE /sessions/{sid}/objects/{oid}``                    removes the object
``POST /sessions/{sid}/reset``                              removes every object
``DELETE /sessions/{sid}``                                  closes the session
``POST /sessions/{sid}/jobs`` (see ``JobRequest``)          ``{"job", "total"}``: tracking in the background
``GET /sessions/{sid}/jobs/{jid}?since=N``                  binary: status and the results N.. (a batch)
``DELETE /sessions/{sid}/jobs/{jid}``                       cancels after the current frame
==========================================================  ==================================================

Coordinates are pixels of the session's frames (x right, y down), frame indices start at 0,
object ids are 1..254, as in ``sam2s.session``. Requests of one session are serialised (one lock
per session); while a job runs, prompts and changes of that session get 409.

Modules (this one builds the application and runs it; all of them need FastAPI, pydantic or
uvicorn): ``server_bodies`` (the JSON request bodies), ``server_state`` (uploads, jobs, sessions,
limits, model cache), ``server_guard`` (token, protocol, body size), ``server_errors`` (JSON
errors), ``server_setup`` (creating a session), ``server_frames`` (server-side frames), and the
routes by resource: ``routes_info``, ``routes_uploads``, ``routes_sessions``, ``routes_jobs``
(``routes_common``: what they share).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .options import (
    ENV_TOKEN,
    INSTALL_SERVER,
    ServerLimits,
    add_server_arguments,
    limits_from_args,
)

try:
    import uvicorn
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
except ImportError as _error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"sam2s.serving.server needs FastAPI and uvicorn ({_error}); install them with {INSTALL_SERVER} "
        "(fastapi>=0.110, uvicorn>=0.29). The client, sam2s.serving.client, needs neither."
    ) from _error

from .. import __version__
from ..resources import available_memory_bytes
from . import routes_info, routes_jobs, routes_sessions, routes_uploads
from .access import MIN_REMOTE_TOKEN_LENGTH, is_loopback, read_token_file
from .routes_jobs import POLL_MAX_BYTES, POLL_MAX_FRAMES
from .server_bodies import (
    MAX_PROMPT_POINTS,
    BoxRequest,
    FramesSpec,
    JobRequest,
    ModelRequest,
    PointsRequest,
    SessionRequest,
    UploadRequest,
)
from .server_errors import ApiError, add_error_handlers
from .server_frames import SelectedFrames
from .server_guard import Guard, request_body_limit
from .server_setup import FRAME_BYTES_PER_PIXEL, estimate_session_bytes
from .server_state import ServerState

__all__ = [
    "ENV_TOKEN",
    "FRAME_BYTES_PER_PIXEL",
    "MAX_PROMPT_POINTS",
    "POLL_MAX_BYTES",
    "POLL_MAX_FRAMES",
    "READY_PREFIX",
    "ApiError",
    "BoxRequest",
    "FramesSpec",
    "JobRequest",
    "ModelRequest",
    "PointsRequest",
    "SelectedFrames",
    "ServerLimits",
    "SessionRequest",
    "UploadRequest",
    "create_app",
    "estimate_session_bytes",
    "main",
    "request_body_limit",
    "run",
    "serve",
]

READY_PREFIX = "SAM2S server listening on"
"""Start of the line ``serve`` prints once it accepts connections."""

SHUTDOWN_GRACE_S = 5
"""Seconds a SIGTERM'ed server waits for open connections before it closes them (uvicorn's
``timeout_graceful_shutdown``): clients keep connections alive between requests, and an idle
kept-alive TLS connection otherwise held the shutdown until the client closed it."""


# ------------------------------------------------------------------------------------------------
# The application
# ------------------------------------------------------------------------------------------------


def create_app(
    tokens: Sequence[str], allow_paths: Sequence[str | Path] = (), limits: ServerLimits | None = None
) -> FastAPI:
    """The tracking server as a FastAPI application (endpoints and rules: module docstring).

    Args:
        tokens: accepted bearer tokens (non-empty strings of printable ASCII without spaces).
        allow_paths: existing folders (or files) under which server-side paths may be read.
        limits: the server's limits (``ServerLimits``: sizes, counts, bytes, idle time, model
            cache); None: the defaults.

    Returns:
        The application; run it with uvicorn (``serve`` does).

    Raises:
        ValueError: no token, an invalid token, or a root that does not exist.
    """
    tokens = list(tokens)
    if not tokens:
        raise ValueError(f"the server needs at least one token; pass tokens=[...] or set {ENV_TOKEN}")
    for token in tokens:
        if not isinstance(token, str) or not token or not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError(
                "a token must be a non-empty string of printable ASCII characters without spaces "
                "(e.g. secrets.token_urlsafe(32))"
            )
    for root in allow_paths:
        if not os.path.exists(root):
            raise ValueError(f"allowed path {str(root)!r} does not exist; pass existing folders as allow_paths")
    limits = ServerLimits() if limits is None else limits
    state = ServerState(tokens, allow_paths, limits, available_memory=_available_memory)
    app = FastAPI(
        title="sam2s tracking server",
        version=__version__,
        lifespan=_lifespan(state),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sam2s = state
    app.add_middleware(Guard, state=state)
    add_error_handlers(app)
    for routes in (routes_info, routes_uploads, routes_sessions, routes_jobs):
        routes.add_routes(app)
    return app


def _available_memory() -> int | None:
    """``available_memory_bytes()``, looked up in this module when called (so that replacing
    ``sam2s.serving.server.available_memory_bytes`` changes what every server's memory checks see)."""
    return available_memory_bytes()


def _lifespan(state: ServerState):
    """The application's lifespan: a thread closing idle sessions and uploads while it runs; at
    shutdown, every session closed (jobs cancelled) and every upload dropped."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        reaper = threading.Thread(target=_reap, args=(state,), name="sam2s-reaper", daemon=True)
        reaper.start()
        try:
            yield
        finally:
            state.stop.set()
            with state.lock:
                sessions = list(state.sessions.values())
                state.sessions.clear()
                state.uploads.clear()
            for s in sessions:
                await run_in_threadpool(s.close)

    return lifespan


def _reap(state: ServerState) -> None:
    """Expire idle sessions and uploads every quarter of ``idle_timeout_s`` (0.05 to 30 s) until
    ``state.stop`` is set."""
    period = min(max(state.limits.idle_timeout_s / 4, 0.05), 30.0)
    while not state.stop.wait(period):
        with contextlib.suppress(Exception):
            state.expire()


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    tokens: Sequence[str] | None = None,
    allow_paths: Sequence[str | Path] = (),
    ssl_certfile: str | Path | None = None,
    ssl_keyfile: str | Path | None = None,
    ready_file: str | Path | None = None,
    log_level: str = "warning",
    limits: ServerLimits | None = None,
) -> None:
    """Run the tracking server with uvicorn until interrupted (Ctrl+C / SIGTERM: a graceful
    shutdown, after which this returns normally).

    The socket is bound here (``port=0``: a free port chosen by the system); once uvicorn accepts
    connections, one line ``SAM2S server listening on http(s)://HOST:PORT`` is printed on stdout
    (flushed) and written to ``ready_file`` (a new file, written under a temporary name first). When the token was generated
    here (loopback only) the line ends with `` token=TOKEN``.

    Args:
        host: address to bind; a non-loopback address (e.g. ``0.0.0.0``) needs explicit tokens of
            at least ``MIN_REMOTE_TOKEN_LENGTH`` (32) characters, and should use TLS.
        port: TCP port, 0 for a free one.
        tokens: accepted tokens; None: ``$SAM2S_SERVER_TOKEN``, else (loopback only) a random
            ``secrets.token_urlsafe(32)``.
        allow_paths: folders whose files (videos, frame folders, checkpoints) clients may name.
        ssl_certfile, ssl_keyfile: PEM certificate and key for HTTPS (both or neither).
        ready_file: a new file to write the ready line to (refused if it exists).
        log_level: uvicorn's log level (logs go to stderr; access logs are off).
        limits: the server's ``ServerLimits`` (None: the defaults).

    Raises:
        ValueError: no or short tokens on a non-loopback address, only one of the TLS files,
            an existing ready file, a root that does not exist (before anything is bound).
        OSError: the address cannot be bound (e.g. the port is in use).
    """
    if ready_file is not None and (Path(ready_file).exists() or not Path(ready_file).parent.is_dir()):
        raise ValueError(
            f"--ready-file {ready_file}: give a new file in an existing folder (an existing file is never replaced)"
        )
    tokens, generated = _server_tokens(host, tokens)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile (PEM files); pass both or neither")
    app = create_app(tokens, allow_paths, limits)
    sock = _bind(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    scheme = "https" if ssl_certfile else "http"
    line = f"{READY_PREFIX} {scheme}://{shown}:{bound[1]}" + (f" token={generated}" if generated else "")
    config = uvicorn.Config(
        app,
        ssl_certfile=None if ssl_certfile is None else os.fspath(ssl_certfile),
        ssl_keyfile=None if ssl_keyfile is None else os.fspath(ssl_keyfile),
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # clients keep their connection alive (sam2s.serving.connection: the Slicer module holds one
        # open between polls); without a bound uvicorn's graceful shutdown waits for them to close
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    try:
        _Server(config, line, ready_file).run(sockets=[sock])
    finally:
        sock.close()


def _server_tokens(host: str, tokens: Sequence[str] | None) -> tuple[list[str], str | None]:
    """``(tokens, generated token or None)`` of a server on ``host``: the given tokens, else
    ``$SAM2S_SERVER_TOKEN``, else (loopback only) a new random token.

    Raises:
        ValueError: no explicit token, or one shorter than ``MIN_REMOTE_TOKEN_LENGTH``, on a
            non-loopback address.
    """
    explicit = tokens is not None
    if tokens is None:
        env = os.environ.get(ENV_TOKEN, "").strip()
        tokens, explicit = ([env], True) if env else ([], False)
    tokens = list(tokens)
    if not is_loopback(host):
        if not explicit or not tokens:
            raise ValueError(
                f"binding to the non-loopback address {host!r} needs an explicit token: pass --token-file or set "
                f"{ENV_TOKEN} to a secret of at least {MIN_REMOTE_TOKEN_LENGTH} characters (e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'); use TLS (--ssl-certfile/--ssl-keyfile) too"
            )
        short = [t for t in tokens if len(t) < MIN_REMOTE_TOKEN_LENGTH]
        if short:
            raise ValueError(
                f"binding to the non-loopback address {host!r} needs tokens of at least {MIN_REMOTE_TOKEN_LENGTH} "
                f"characters; one has {len(short[0])}: pass --token or set {ENV_TOKEN} to a longer secret, e.g. "
                "from secrets.token_urlsafe(32)"
            )
    if tokens:
        return tokens, None
    generated = secrets.token_urlsafe(32)
    return [generated], generated


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket bound to ``host``:``port`` (0: a free port), inheritable by uvicorn.

    Raises:
        OSError: the address cannot be resolved or bound (e.g. the port is in use).
    """
    info = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server that announces ``line`` (``_announce``) once it accepts connections, and
    exits normally after a graceful shutdown on SIGTERM / SIGINT."""

    def __init__(self, config: uvicorn.Config, line: str, ready_file: str | Path | None) -> None:
        super().__init__(config)
        self.ready_line, self.ready_file = line, ready_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            _announce(self.ready_line, self.ready_file)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn (>= 0.29) raises the SIGTERM / SIGINT it caught again after its graceful
        # shutdown, which ends the process with -15 (or KeyboardInterrupt): forget them once the
        # shutdown finished, so that the process exits with 0.
        with super().capture_signals():
            yield
            self._captured_signals = []


def _announce(line: str, ready_file: str | Path | None) -> None:
    print(line, flush=True)
    if ready_file is not None:
        path = Path(ready_file)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(line + "\n", encoding="utf-8")
        os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Serve with options parsed by ``sam2s.serving.options.add_server_arguments`` (``sam2s serve``,
    ``python -m sam2s.serving.server``) until SIGTERM or Ctrl+C, or until ``--parent-pid``'s process
    has ended (``sam2s.serving.supervise.watch_parent``: then as after SIGTERM).

    Returns:
        The exit status: 0 after a graceful shutdown; 2 with a message on stderr for a refused
        configuration (a public address without a long token, a bad token file or limit, a
        missing root); 1 when the address cannot be bound.
    """
    if getattr(args, "parent_pid", None):
        from .supervise import watch_parent

        watch_parent(args.parent_pid, lambda: os.kill(os.getpid(), signal.SIGTERM))  # the graceful stop
    try:
        tokens = list(args.token or []) + [read_token_file(path) for path in args.token_file or []]
        serve(
            host=args.host,
            port=args.port,
            tokens=tokens or None,
            allow_paths=args.allow_path,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            ready_file=args.ready_file,
            log_level=args.log_level,
            limits=limits_from_args(args),
        )
    except ValueError as error:
        print(f"sam2s server: error: {error}", file=sys.stderr, flush=True)
        return 2
    except OSError as error:
        print(f"sam2s server: error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sam2s.serving.server``: parse the command line (``sam2s.serving.options``) and ``run``."""
    parser = argparse.ArgumentParser(prog="python -m sam2s.serving.server")
    add_server_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
