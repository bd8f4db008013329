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
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import hmac
import math
import operator
import os
import secrets
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import numpy as np

from .options import (
    ENV_TOKEN,
    INSTALL_SERVER,
    JOB_FRAMES_PER_SESSION_FRAME,
    ServerLimits,
    add_server_arguments,
    limits_from_args,
)

try:
    import uvicorn
    from fastapi import FastAPI, Query, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
except ImportError as _error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"sam2s.serving.server needs FastAPI and uvicorn ({_error}); install them with {INSTALL_SERVER} "
        "(fastapi>=0.110, uvicorn>=0.29). The client, sam2s.serving.client, needs neither."
    ) from _error

from .. import __version__
from ..checkpoints import CheckpointError, get_info, resolve_checkpoint
from ..frames import FrameSource, FrameSourceError, open_frames
from ..modelspec import ModelSpec
from ..resources import available_memory_bytes, sam2_work_bytes
from ..session import MAX_OBJECT_ID, MIN_OBJECT_ID, PromptError, Tracker, TrackerBusyError, TrackingPlan
from ..spec import PRECISIONS, check_image_size, check_precision
from . import protocol
from .access import (
    MIN_REMOTE_TOKEN_LENGTH,
    PathNotAllowedError,
    check_readable,
    is_loopback,
    read_token_file,
    real_roots,
)
from .client import is_shared_frames_name

__all__ = [
    "ENV_TOKEN",
    "FRAME_BYTES_PER_PIXEL",
    "MAX_PROMPT_POINTS",
    "POLL_MAX_BYTES",
    "POLL_MAX_FRAMES",
    "ApiError",
    "SelectedFrames",
    "ServerLimits",
    "create_app",
    "estimate_session_bytes",
    "main",
    "request_body_limit",
    "run",
    "serve",
]

POLL_MAX_FRAMES = 64
"""Most frames one job poll returns."""

POLL_MAX_BYTES = 32 * 2**20
"""A job poll stops adding frames once its arrays reach this many bytes (at least one frame)."""

READY_PREFIX = "SAM2S server listening on"
"""Start of the line ``serve`` prints once it accepts connections."""

MAX_PROMPT_POINTS = 1024
"""Most clicks in one points or box request."""

FRAME_BYTES_PER_PIXEL = 16
"""Working memory per pixel of a session's frames (float32 logits at the frames' resolution,
resizing), measured as above: 3840x2160 frames needed 107 MiB more than 320x240 ones at 256 px."""

_FRAME_CACHE = 4  # resized frames a SelectedFrames keeps
_MIN_BODY_LIMIT = 16 * 2**20  # request_body_limit's floor
_GIB = float(2**30)

_JOBS_KEPT = 2  # finished jobs kept per session (with their results), besides the running one
_JOIN_TIMEOUT_S = 60.0  # how long closing a session waits for its job thread to stop


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


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


def _json_error(status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status, headers=headers)


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
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


# ------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------


class SelectedFrames(FrameSource):
    """Some frames of another source, resized: frame ``i`` is ``source.get(indices[i])`` resized to
    ``size`` with OpenCV's ``INTER_AREA`` (as the Slicer import does), decoded lazily.

    Args:
        source: the ``FrameSource`` to select from (closed by ``close``).
        indices: frame indices of ``source`` (any order, repeats allowed), or None for all.
        size: ``(W, H)`` in pixels of the frames, or None to keep the source's size (frames of
            that size are returned unchanged, without resizing).
        cache_size: resized frames kept in memory (the last used).

    Raises:
        ValueError: no frames, an index outside ``0..len(source)-1``, or a size not positive.
        TypeError: a non-integer index or size.
    """

    def __init__(
        self,
        source: FrameSource,
        indices: Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
        cache_size: int = _FRAME_CACHE,
    ) -> None:
        n = len(source)
        picked = list(range(n)) if indices is None else [operator.index(i) for i in indices]
        if not picked:
            raise ValueError("frame_indices is empty: select at least one frame")
        bad = [i for i in picked if not 0 <= i < n]
        if bad:
            raise ValueError(f"frame index {bad[0]} is out of range 0..{n - 1} for {source.name}")
        width, height = (source.width, source.height) if size is None else (operator.index(s) for s in size)
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be two positive integers [W, H] in pixels, got {[width, height]}")
        self._source, self._indices = source, picked
        self._width, self._height = int(width), int(height)
        self._resize = (self._width, self._height) != (source.width, source.height)
        self._fps = source.fps if indices is None else None
        what = "all frames" if indices is None else f"{len(picked)} selected frames"
        self._name = f"{source.name} ({what}, {self._width}x{self._height})"
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, int(cache_size))

    def __len__(self) -> int:
        return len(self._indices)

    def _read(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        frame = self._source.get(self._indices[index])
        if self._resize:
            import cv2

            frame = cv2.resize(np.ascontiguousarray(frame), (self._width, self._height), interpolation=cv2.INTER_AREA)
        frame.flags.writeable = False
        self._cache[index] = frame
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return frame

    def close(self) -> None:
        """Close the underlying source and drop the cached frames."""
        self._cache.clear()
        self._source.close()


def _attach_shared_memory(name: str):
    """Attach the existing ``multiprocessing.shared_memory`` block ``name`` without letting this
    process's resource tracker unlink it at exit (the client owns it)."""
    from multiprocessing import resource_tracker, shared_memory

    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        shm = shared_memory.SharedMemory(name=name)
        with contextlib.suppress(Exception):
            resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 (3.8-3.12 register on attach)
        return shm


# ------------------------------------------------------------------------------------------------
# Request bodies
# ------------------------------------------------------------------------------------------------


SInt = Annotated[int, Strict()]
SBool = Annotated[bool, Strict()]
SStr = Annotated[str, Strict()]
SFloat = Annotated[float, Strict()]  # strict floats accept JSON integers too


class _Body(BaseModel):
    """Request bodies: unknown fields refused; ints, bools and strings not converted from other types."""

    model_config = ConfigDict(extra="forbid")


class FramesSpec(_Body):
    """Where a session's frames come from: exactly one of ``path``, ``shm``, ``upload``.

    Attributes:
        path: a video file or image folder on the server (absolute, under an allowed root).
        frame_indices: with ``path``: the frames to use, as indices of the file's frames.
        size: with ``path``: ``[W, H]`` in pixels to resize the frames to (OpenCV INTER_AREA).
        shm: the name of a ``multiprocessing.shared_memory`` block of the client (same machine)
            holding a C-contiguous ``(T, H, W, 3)`` uint8 RGB array; used without copying, never
            unlinked by the server (closed with the session).
        shape: with ``shm``: ``[T, H, W, 3]``.
        upload: the id of a complete upload (``POST /uploads``); the session takes its frames.
    """

    path: Optional[SStr] = None  # noqa: UP045 (pydantic evaluates annotations, also on Python 3.9)
    frame_indices: Optional[list[SInt]] = None  # noqa: UP045
    size: Optional[tuple[SInt, SInt]] = None  # noqa: UP045
    shm: Optional[SStr] = None  # noqa: UP045
    shape: Optional[tuple[SInt, SInt, SInt, SInt]] = None  # noqa: UP045
    upload: Optional[SStr] = None  # noqa: UP045

    @model_validator(mode="after")
    def _one_source(self) -> FramesSpec:
        given = [k for k in ("path", "shm", "upload") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f'give exactly one of "path", "shm", "upload" (got {given or "none"})')
        if self.path is None and (self.frame_indices is not None or self.size is not None):
            raise ValueError('"frame_indices" and "size" go only with "path"')
        if self.size is not None and min(self.size) <= 0:
            raise ValueError(f'"size" must be two positive integers [W, H], got {list(self.size)}')
        if self.shm is not None:
            if self.shape is None or self.shape[3] != 3 or min(self.shape) <= 0:
                raise ValueError(f'"shm" needs "shape": [T, H, W, 3] with T, H, W >= 1 (got {self.shape})')
        elif self.shape is not None:
            raise ValueError('"shape" goes only with "shm"')
        return self


class ModelRequest(_Body):
    """The tracker of a session: the request form of ``sam2s.spec.ModelSpec`` (its checks; ``None``
    precision and ``params`` are protocol details).

    Attributes:
        engine: ``"sam2"`` (``sam2s.VideoTracker``) or ``"flow"`` (``sam2s.FlowTracker``, no model).
        config: SAM 2 config name (``sam2s.CONFIGS``), e.g. ``"sam2.1_hiera_t"``; needed for sam2.
        checkpoint: a checkpoint file on the server (absolute, under an allowed root), a registry
            name (``sam2s.checkpoints.REGISTRY``) in the engine's cache, or None: the official
            checkpoint of ``config`` from the cache (never downloaded by the server).
        image_size: model input side in pixels (``sam2s.spec.check_image_size``: a multiple of 32
            from 64 to 4096), and at most the server's ``max_image_size``.
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        precision: ``"auto"`` (``sam2s.build.auto_precision`` of the device: bf16 on CUDA and on
            CPUs with native bf16, else fp32), ``"fp32"`` or ``"bf16"`` (``sam2s.build_model``),
            or None (left out): what protocol-1 servers did before the field existed, bf16
            (autocast) on CUDA and fp32 elsewhere. Added within protocol 1 as an optional field:
            servers that take it list ``"precisions"`` in ``GET /version``; clients send it only
            to those (older servers refuse unknown fields).
        params: keyword parameters of ``FlowTracker`` (flow engine only).
    """

    engine: Literal["sam2", "flow"] = "sam2"
    config: Optional[SStr] = None  # noqa: UP045
    checkpoint: Optional[SStr] = None  # noqa: UP045
    image_size: SInt = 1024
    device: SStr = "auto"
    precision: Optional[SStr] = None  # noqa: UP045
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: int) -> int:
        return check_image_size(value)  # sam2s.spec: the one rule (and message) of every front end

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        return None if value is None else check_precision(value)

    @model_validator(mode="after")
    def _engine_fields(self) -> ModelRequest:
        if self.engine == "sam2" and not self.config:
            raise ValueError('the sam2 engine needs "config", a model config name such as "sam2.1_hiera_t"')
        if self.engine == "sam2" and self.params:
            raise ValueError('"params" are FlowTracker parameters (flow engine); for sam2 use "memory_params"')
        return self


class SessionRequest(_Body):
    """``POST /sessions``: ``{"frames": FramesSpec, "model": ModelRequest, "memory": "sam2" | "divemem",
    "memory_params": {...}}`` (memory: the SAM 2 memory policy and its ``DiveMem`` parameters)."""

    frames: FramesSpec
    model: ModelRequest
    memory: Literal["sam2", "divemem"] = "sam2"
    memory_params: dict[str, Any] = Field(default_factory=dict)


class UploadRequest(_Body):
    """``POST /uploads``: optionally the final ``shape`` ``[T, H, W, 3]`` (preallocated; chunks may
    then be re-sent)."""

    shape: Optional[tuple[SInt, SInt, SInt, SInt]] = None  # noqa: UP045


class PointsRequest(_Body):
    """Clicks: ``frame`` index, ``points`` ``[[x, y], ...]`` pixels (x right, y down), ``labels``
    1 / 0, ``clear_old_points``, and ``logits`` (answer float32 logits instead of a bool mask)."""

    frame: SInt
    points: list[list[SFloat]] = Field(max_length=MAX_PROMPT_POINTS)
    labels: list[SInt] = Field(max_length=MAX_PROMPT_POINTS)
    clear_old_points: SBool = True
    logits: SBool = False


class BoxRequest(_Body):
    """A box ``[x0, y0, x1, y1]`` pixels on ``frame``, optional clicks, and ``logits`` as above."""

    frame: SInt
    box: list[SFloat]
    points: Optional[list[list[SFloat]]] = Field(None, max_length=MAX_PROMPT_POINTS)  # noqa: UP045
    labels: Optional[list[SInt]] = Field(None, max_length=MAX_PROMPT_POINTS)  # noqa: UP045
    logits: SBool = False


class JobRequest(_Body):
    """``POST /sessions/{sid}/jobs``: ``passes`` ``[[start, end, reverse], ...]`` (start / end: frame
    indices, both included, or null for the engine's default), each one ``propagate`` call in
    order (at most ``max_passes``); ``obj_ids`` to track (null: all); ``logits``: keep float32
    logits instead of masks."""

    passes: list[tuple[Optional[SInt], Optional[SInt], SBool]] = Field(min_length=1)  # noqa: UP045
    obj_ids: Optional[list[SInt]] = Field(None, max_length=MAX_OBJECT_ID)  # noqa: UP045
    logits: SBool = False


# ------------------------------------------------------------------------------------------------
# Server state
# ------------------------------------------------------------------------------------------------


class _Upload:
    """Frames a client sends in chunks, owned by one token."""

    def __init__(self, uid: str, owner: str, shape: tuple[int, int, int, int] | None) -> None:
        self.id, self.owner = uid, owner
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.buffer: np.ndarray | None = None if shape is None else np.empty(shape, np.uint8)
        self.chunks: list[np.ndarray] = []  # without a declared shape
        self.count = 0  # frames received (contiguous from 0)

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        if self.buffer is not None:
            return self.buffer.shape[1], self.buffer.shape[2]
        return (self.chunks[0].shape[1], self.chunks[0].shape[2]) if self.chunks else None

    def nbytes(self) -> int:
        return self.buffer.nbytes if self.buffer is not None else sum(c.nbytes for c in self.chunks)


class _Job:
    """A background thread running ``propagate`` passes on one session; results kept in order."""

    def __init__(self, jid: str, passes: list[tuple[int, int, bool]], obj_ids: list[int] | None, logits: bool):
        self.id, self.passes, self.obj_ids, self.logits = jid, passes, obj_ids, logits
        self.total = sum(abs(end - start) + 1 for start, end, _ in passes)
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.results: list[tuple[int, list[int], np.ndarray, tuple[int, ...]]] = []
        # per result, per object: [predicted IoU, object score] (``Tracker.confidence``) or None
        self.confidences: list[list[list[float] | None]] = []
        self.status = "running"
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def run(self, tracker: Tracker, on_exit: Callable[[], None]) -> None:
        try:
            plan = TrackingPlan(tuple(self.passes), None if self.obj_ids is None else tuple(self.obj_ids))
            for tracked in tracker.run(plan, cancel=self.cancel):
                out = np.asarray(tracked.logits, dtype=np.float32)
                stored = out if self.logits else np.packbits((out > 0).reshape(-1))
                scores = [None if v is None else [float(v[0]), float(v[1])] for v in tracked.confidences]
                with self.lock:
                    self.results.append((tracked.frame_idx, tracked.obj_ids, stored, out.shape))
                    self.confidences.append(scores)
            with self.lock:
                self.status = "done" if len(self.results) == self.total else "cancelled"
        except BaseException as error:  # noqa: BLE001 - reported to the client, never lost
            with self.lock:
                self.status = "failed"
                self.error = f"{type(error).__name__}: {error}"
        finally:
            on_exit()

    def frame(self, i: int) -> tuple[int, list[int], np.ndarray]:
        t, ids, stored, shape = self.results[i]
        if self.logits:
            return t, ids, stored
        return t, ids, np.unpackbits(stored, count=math.prod(shape)).astype(bool).reshape(shape)


class _Session:
    """One tracking session: its tracker, owner, lock and jobs; ``held_bytes``: the bytes of the
    frames it took from an upload (counted in its token's quota)."""

    def __init__(
        self, sid: str, owner: str, tracker: Tracker, engine: str, shm: Any = None, held_bytes: int = 0
    ) -> None:
        self.id, self.owner, self.tracker, self.engine, self.shm = sid, owner, tracker, engine, shm
        self.held_bytes = int(held_bytes)
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self.running: _Job | None = None
        self.closed = False

    def info(self) -> dict[str, Any]:
        t = self.tracker
        if t is None:
            raise ApiError(404, "session_not_found", f"session {self.id} was closed")
        running = self.running
        return {
            "session": self.id,
            "engine": self.engine,
            "num_frames": t.num_frames,
            "height": t.height,
            "width": t.width,
            "obj_ids": [int(k) for k in t.obj_ids],
            "jobs": list(self.jobs),
            "running_job": None if running is None else running.id,
        }

    @contextlib.contextmanager
    def changing(self) -> Iterator[Tracker]:
        """The tracker, under the session lock, for a prompt or change; 409 while a job runs."""
        with self.lock:
            if self.closed:
                raise ApiError(404, "session_not_found", f"session {self.id} was closed")
            if self.running is not None:
                raise ApiError(
                    409,
                    "busy",
                    f"session {self.id} is running job {self.running.id}: wait until it is done or cancel it "
                    f"(DELETE /sessions/{self.id}/jobs/{self.running.id}), then send the request again",
                )
            with _engine_errors():
                yield self.tracker

    def close(self) -> None:
        """Cancel and join the job, release the frames (and the shared memory)."""
        with self.lock:
            self.closed = True
            running = self.running
        if running is not None:
            running.cancel.set()
            if running.thread is not None:
                running.thread.join(_JOIN_TIMEOUT_S)
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            with contextlib.suppress(Exception):
                tracker.frames.close()
            del tracker
        if self.shm is not None:
            import gc

            gc.collect()  # drop the numpy views of the block before closing it
            with contextlib.suppress(BufferError, OSError):
                self.shm.close()


class _State:
    """Everything a server holds: sessions, uploads, cached models, limits."""

    def __init__(self, tokens: Sequence[str], allow_paths: Sequence[str | Path], limits: ServerLimits) -> None:
        self.tokens = [t.encode("utf-8") for t in tokens]
        self.roots = real_roots(allow_paths)
        self.limits = limits
        self.lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.uploads: dict[str, _Upload] = {}
        self.pending: dict[str, int] = {}  # owner -> sessions being created
        self.models: OrderedDict[tuple, Any] = OrderedDict()
        self.model_locks: dict[tuple, threading.Lock] = {}
        self.models_lock = threading.Lock()
        self.stop = threading.Event()

    # ---------------------------------------------------------------- tokens
    def owner_of(self, authorization: bytes | None) -> str | None:
        """The owner id (a hash) of a ``Bearer`` token that matches one of the tokens, else None."""
        if not authorization:
            return None
        scheme, _, given = authorization.partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            return None
        match = None
        for token in self.tokens:  # every token is compared: the time does not tell which matched
            if hmac.compare_digest(given, token):
                match = token
        return None if match is None else hashlib.sha256(match).hexdigest()[:24]

    # ---------------------------------------------------------------- expiry
    def expire(self) -> None:
        """Close the sessions and drop the uploads idle for ``idle_timeout_s`` (not while busy)."""
        now = time.monotonic()
        with self.lock:
            # a session inside a request (its lock held) is in use; a job nobody polls does not keep it
            old = [
                s
                for s in self.sessions.values()
                if now - s.last_used > self.limits.idle_timeout_s and not s.lock.locked()
            ]
            for s in old:
                del self.sessions[s.id]
            for u in [u for u in self.uploads.values() if now - u.last_used > self.limits.idle_timeout_s]:
                del self.uploads[u.id]
        for s in old:
            threading.Thread(target=s.close, name=f"sam2s-close-{s.id}", daemon=True).start()

    def session(self, owner: str, sid: str) -> _Session:
        """The owner's session ``sid`` (touched), or 404 ``session_not_found``."""
        self.expire()
        with self.lock:
            s = self.sessions.get(sid)
            if s is None or not hmac.compare_digest(s.owner, owner):
                raise ApiError(
                    404,
                    "session_not_found",
                    f"session {sid!r} does not exist: it was closed, it expired after {self.limits.idle_timeout_s:g} s "
                    "without requests, the server restarted, or it belongs to another token; create a new session",
                )
            s.last_used = time.monotonic()
            return s

    def upload(self, owner: str, uid: str) -> _Upload:
        """The owner's upload ``uid`` (touched), or 404 ``upload_not_found``."""
        self.expire()
        with self.lock:
            u = self.uploads.get(uid)
            if u is None or not hmac.compare_digest(u.owner, owner):
                raise ApiError(
                    404,
                    "upload_not_found",
                    f"upload {uid!r} does not exist: it was used by a session, deleted, expired after "
                    f"{self.limits.idle_timeout_s:g} s without requests, or belongs to another token; upload the frames again",
                )
            u.last_used = time.monotonic()
            return u

    def count(self, owner: str) -> tuple[int, int]:
        """(sessions incl. pending, uploads) of ``owner``; call with ``self.lock`` held."""
        sessions = sum(1 for s in self.sessions.values() if s.owner == owner) + self.pending.get(owner, 0)
        return sessions, sum(1 for u in self.uploads.values() if u.owner == owner)

    # ---------------------------------------------------------------- limits
    def check_quota(self, owner: str, adding: int) -> None:
        """413 ``quota_exceeded`` when ``owner``'s uploads and sessions made from uploads, with
        ``adding`` more bytes, would hold more than ``max_token_bytes``; call with ``self.lock`` held."""
        held = sum(u.nbytes() for u in self.uploads.values() if u.owner == owner)
        held += sum(s.held_bytes for s in self.sessions.values() if s.owner == owner)
        quota = self.limits.max_token_bytes
        if held + adding > quota:
            raise ApiError(
                413,
                "quota_exceeded",
                f"this token's uploads and sessions made from uploads hold {held:,} bytes; {adding:,} more would pass "
                f"its quota of {quota:,} bytes (the server's --max-token-gb): delete uploads (DELETE /uploads/ID) or "
                "close sessions you no longer need, or send fewer or smaller frames",
                held_bytes=held,
                quota_bytes=quota,
            )

    def check_frames(self, count: int, width: int, height: int, what: str) -> None:
        """422 ``limit_exceeded`` for more than ``max_frames`` frames or a side over ``max_frame_side``."""
        limits = self.limits
        if max(width, height) > limits.max_frame_side:
            raise ApiError(
                422,
                "limit_exceeded",
                f"{what}: frames of {width}x{height} pixels (W x H) are larger than this server's {limits.max_frame_side} "
                "pixels per side (--max-frame-side): send smaller frames (resize them), or restart the server with a "
                "larger --max-frame-side",
            )
        if count > limits.max_frames:
            raise ApiError(
                422,
                "limit_exceeded",
                f"{what}: {count:,} frames are more than this server's {limits.max_frames:,} per session "
                "(--max-frames): use fewer frames (a range or a frame step), or restart the server with a larger "
                "--max-frames",
            )

    def check_new_object(self, tracker: Tracker, obj_id: int) -> None:
        """422 ``limit_exceeded`` when a prompt for ``obj_id`` would add an object beyond ``max_objects``
        (ids outside 1..254 are left to the engine's ``PromptError``)."""
        most = self.limits.max_objects
        if MIN_OBJECT_ID <= obj_id <= MAX_OBJECT_ID and obj_id not in tracker.objects and len(tracker.objects) >= most:
            raise ApiError(
                422,
                "limit_exceeded",
                f"object {obj_id} would be this session's object number {len(tracker.objects) + 1}, but this server "
                f"allows {most} per session (--max-objects): prompt an existing object, remove one "
                "(DELETE /sessions/ID/objects/OID), or track the others in another session",
            )

    @staticmethod
    def check_memory(needed: int, what: str) -> None:
        """507 ``insufficient_memory`` when ``needed`` bytes exceed ``available_memory_bytes()``
        (nothing is checked when it is unknown)."""
        available = available_memory_bytes()
        if available is not None and needed > available:
            raise ApiError(
                507,
                "insufficient_memory",
                f"{what} needs about {needed / _GIB:.2f} GiB ({needed:,} bytes) but this server has only "
                f"{available / _GIB:.2f} GiB ({available:,} bytes) of memory available: use fewer or smaller frames "
                "(or a smaller model.image_size), close sessions you no longer need, or try again later",
                needed_bytes=needed,
                available_bytes=available,
            )

    # ---------------------------------------------------------------- paths
    def allowed_path(self, value: str, field: str) -> str:
        """The real path of a server-side path under an allowed root (for an image folder, every
        frame image too: ``sam2s.serving.access.check_readable``); 403 otherwise."""
        if not self.roots:
            raise ApiError(
                403,
                "path_not_allowed",
                f"{field}: this server accepts no server-side paths (it was started without --allow-path); "
                "upload the frames (or share memory on the same machine), or restart it with --allow-path ROOT",
            )
        if not value or "\x00" in value or not os.path.isabs(value):
            raise ApiError(422, "invalid_request", f"{field} must be an absolute path on the server, got {value!r}")
        try:
            return check_readable(value, self.roots, field)
        except PathNotAllowedError as error:
            raise ApiError(403, "path_not_allowed", str(error)) from None

    # ---------------------------------------------------------------- models
    def model_key(self, spec: ModelRequest) -> tuple:
        """``(config, checkpoint file, mtime, size, image_size, device, precision)`` of a SAM 2 spec:
        the device and checkpoint checked (cheap; done before the frames are opened); ``"auto"``
        device and precision resolved, so that equal models share a cache entry."""
        from ..build import auto_device, resolve_device, resolve_precision

        device = auto_device(spec.device)
        try:
            with _engine_errors():
                resolve_device(device)
        except RuntimeError as error:  # a device this machine lacks: the request's fault, not the server's
            raise ApiError(400, "device_unavailable", f"model.device: {error}") from None
        ckpt = self.checkpoint(spec)
        stat = os.stat(ckpt)
        if spec.precision is None:  # the behaviour of servers before the field (protocol 1)
            precision = "bf16" if device.startswith("cuda") else "fp32"
        else:
            precision = resolve_precision(spec.precision, device)
        return (spec.config, ckpt, stat.st_mtime_ns, stat.st_size, spec.image_size, device, precision)

    def unbuilt_model_bytes(self, key: tuple) -> int:
        """The checkpoint's size in bytes (about its weights' memory) of the model of ``key``
        (``model_key``) when it is not built yet, else 0."""
        with self.models_lock:
            return 0 if key in self.models else int(key[3])

    def model(self, spec: ModelRequest) -> Any:
        """The SAM 2 model of ``spec``, built once and kept in an LRU cache of ``model_cache_size``."""
        key = self.model_key(spec)
        config, ckpt, _, _, image_size, device, precision = key
        with self.models_lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            lock = self.model_locks.setdefault(key, threading.Lock())
        with lock:  # one build per spec, even when several sessions ask at once
            with self.models_lock:
                if key in self.models:
                    return self.models[key]
            model = ModelSpec(
                config=config, checkpoint=ckpt, device=device, image_size=image_size, precision=precision
            ).build()
            with self.models_lock:
                self.models[key] = model
                while len(self.models) > max(1, self.limits.model_cache_size):
                    self.models.popitem(last=False)
                self.model_locks.pop(key, None)
            return model

    def checkpoint(self, spec: ModelRequest) -> str:
        """The checkpoint file of ``spec``: an allowed path, or a registry checkpoint in the cache."""
        name = spec.checkpoint
        if name is None or ("/" not in name and "\\" not in name and not os.path.isabs(name)):
            registry = spec.config if name is None else name
            try:
                get_info(registry)
            except ValueError as error:
                raise ApiError(
                    400, "invalid_request", f"model.checkpoint: {error} Or pass a checkpoint file's absolute path."
                ) from None
            try:
                return str(resolve_checkpoint(registry, allow_download=False))
            except FileNotFoundError as error:
                raise ApiError(400, "checkpoint_not_found", f"model.checkpoint: {error} (on the server)") from None
        return self.allowed_path(name, "model.checkpoint")


def _devices() -> list[str]:
    import torch

    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


# ------------------------------------------------------------------------------------------------
# The guard: token, protocol version, body size (a pure ASGI middleware)
# ------------------------------------------------------------------------------------------------


def request_body_limit(limits: ServerLimits) -> int:
    """Largest body, in bytes, of a request other than an upload's frames (``PUT /uploads/{id}``,
    limited by ``max_upload_bytes``): room for a bit-packed mask of the largest frame
    (``max_frame_side ** 2 / 8``) plus 1 MiB, and for a JSON list of ``max_frames`` frame indices
    (12 bytes each), at least 16 MiB, at most ``max_upload_bytes``. A JSON body is parsed into
    Python objects many times its size, so it gets no more room than it can need."""
    need = max(_MIN_BODY_LIMIT, limits.max_frame_side**2 // 8 + 2**20, 12 * limits.max_frames)
    return min(limits.max_upload_bytes, need)


class _Guard:
    """Checks every request before the application sees it: the token (401, before the body is
    read), the protocol header (426), ``Content-Length`` and the streamed body size (413:
    ``max_upload_bytes`` for an upload's frames, ``request_body_limit`` for the others)."""

    def __init__(self, app: Any, state: _State) -> None:
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
            response = _json_error(
                401,
                "unauthorized",
                f"this request has {given} token: send the header 'Authorization: Bearer TOKEN' with the server's "
                f"token (the {ENV_TOKEN} the server was started with, or the token on its ready line)",
                headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
            return await response(scope, receive, send)
        if path != "/version":
            problem = _protocol_problem(headers.get(protocol.PROTOCOL_HEADER.lower().encode()))
            if problem is not None:
                response = _json_error(
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
                response = _json_error(
                    400, "invalid_request", "the Content-Length header is not a non-negative integer"
                )
                return await response(scope, receive, send)
            if declared > limit:
                response = _json_error(
                    413, "too_large", _too_large(declared, limit, upload), headers={"Connection": "close"}
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
                        413, "too_large", _too_large(received, limit, upload), headers={"Connection": "close"}
                    )
            return message

        return await self.app(scope, counted_receive, send)


def _too_large(size: int, limit: int, upload: bool = True) -> str:
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


def _protocol_problem(value: bytes | None) -> tuple[str, dict[str, Any]] | None:
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


# ------------------------------------------------------------------------------------------------
# The application
# ------------------------------------------------------------------------------------------------


def _binary(header: dict, arrays: Sequence[np.ndarray] = ()) -> Response:
    return Response(protocol.encode(header, arrays), media_type="application/octet-stream")


def _prompt_answer(frame: int, obj_id: int, logits: np.ndarray, want_logits: bool) -> Response:
    out = np.asarray(logits, dtype=np.float32)
    return _binary({"frame": frame, "obj_id": obj_id}, [out if want_logits else out > 0])


def _decode_body(data: bytes) -> tuple[dict, list[np.ndarray]]:
    try:
        return protocol.decode(data)
    except protocol.ProtocolError as error:
        raise ApiError(422, "invalid_request", f"body: {error}") from None


def _int_field(header: dict, name: str, default: Any = ...) -> Any:
    value = header.get(name, default)
    if value is ...:
        raise ApiError(422, "invalid_request", f"body field {name!r} is missing; give it as an integer")
    if value is not default and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(422, "invalid_request", f"body field {name!r} must be an integer, got {value!r:.50}")
    return value


def _bool_field(header: dict, name: str, default: bool) -> bool:
    value = header.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(422, "invalid_request", f"body field {name!r} must be true or false, got {value!r:.50}")
    return value


def _validation_message(errors: Sequence[dict]) -> str:
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


def estimate_session_bytes(
    width: int, height: int, frame_bytes: int = 0, image_size: int | None = None, model_bytes: int = 0
) -> int:
    """Rough bytes a new session will allocate (compared with the available memory before it is
    created): ``FRAME_BYTES_PER_PIXEL * width * height`` plus ``frame_bytes``, and for SAM 2
    (``image_size`` given) ``sam2s.resources.sam2_work_bytes(image_size)`` plus ``model_bytes``.

    Args:
        width, height: the session's frame size in pixels.
        frame_bytes: frame buffers the session will allocate (decoded and resized frames it keeps,
            the frames of an upload sent in several chunks, joined), in bytes.
        image_size: the SAM 2 model's input side in pixels; None for the flow engine.
        model_bytes: the weights of a model not built yet (its checkpoint's size), in bytes.

    Returns:
        The estimate in bytes: a lower bound of the peak for one object (more objects need more).
    """
    needed = FRAME_BYTES_PER_PIXEL * width * height + frame_bytes
    if image_size is not None:
        needed += sam2_work_bytes(image_size) + model_bytes
    return int(needed)


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
    state = _State(tokens, allow_paths, ServerLimits() if limits is None else limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        def reap() -> None:
            period = min(max(state.limits.idle_timeout_s / 4, 0.05), 30.0)
            while not state.stop.wait(period):
                with contextlib.suppress(Exception):
                    state.expire()

        reaper = threading.Thread(target=reap, name="sam2s-reaper", daemon=True)
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

    app = FastAPI(
        title="sam2s tracking server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sam2s = state
    app.add_middleware(_Guard, state=state)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> Response:
        return _json_error(error.status_code, error.code, str(error.detail), headers=error.headers, **error.extra)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _json_error(error.status_code, code, str(error.detail), headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        fields = [
            {"field": ".".join(str(x) for x in e.get("loc", ())), "message": str(e.get("msg"))} for e in errors[:20]
        ]
        return _json_error(422, "invalid_request", _validation_message(errors), errors=fields)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> Response:
        return _json_error(500, "internal_error", f"internal server error: {type(error).__name__}: {error}")

    def owner(request: Request) -> str:
        return request.scope["state"]["sam2s_owner"]

    # ------------------------------------------------------------ info
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict:  # on the event loop: answers even while every worker thread is busy
        """Liveness, without a token: ``{"status": "ok"}``."""
        return {"status": "ok"}

    @app.get("/version")
    def version() -> dict:
        """Versions and capabilities; answered whatever the client's protocol version."""
        import torch

        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "sam2s": __version__,
            "torch": torch.__version__,
            "devices": _devices(),
            "precisions": list(PRECISIONS),
            "engines": ["sam2", "flow"],
            **dataclasses.asdict(state.limits),
            "max_job_frames_per_session_frame": JOB_FRAMES_PER_SESSION_FRAME,
            "max_prompt_points": MAX_PROMPT_POINTS,
            "max_request_bytes": request_body_limit(state.limits),
            "server_paths": bool(state.roots),
        }

    # ------------------------------------------------------------ uploads
    @app.post("/uploads")
    def create_upload(request: Request, body: Optional[UploadRequest] = None) -> dict:  # noqa: UP045
        """A new upload, optionally of a known ``shape`` [T, H, W, 3] (preallocated): 422 beyond the
        frame limits, 413 over the upload size or the token's quota, 507 beyond the available
        memory, 429 over the count."""
        who = owner(request)
        shape = None if body is None else body.shape
        nbytes = 0
        if shape is not None:
            if shape[3] != 3 or min(shape) <= 0:
                raise ApiError(422, "invalid_request", f"body field 'shape' must be [T, H, W, 3], got {list(shape)}")
            state.check_frames(shape[0], shape[2], shape[1], "body field 'shape'")
            nbytes = math.prod(shape)
            if nbytes > state.limits.max_upload_bytes:
                raise ApiError(413, "too_large", _too_large(nbytes, state.limits.max_upload_bytes))
            state.check_memory(nbytes, f"an upload of {shape[0]} frames of {shape[2]}x{shape[1]} pixels")
        state.expire()
        with state.lock:
            if state.count(who)[1] >= state.limits.max_sessions_per_token:
                raise ApiError(
                    429,
                    "too_many_uploads",
                    f"this token already has {state.limits.max_sessions_per_token} uploads; create sessions from them or delete them "
                    "(DELETE /uploads/ID)",
                )
            state.check_quota(who, nbytes)
            uid = uuid.uuid4().hex
            state.uploads[uid] = _Upload(uid, who, None if shape is None else tuple(shape))
        return {"upload": uid}

    @app.put("/uploads/{uid}")
    async def put_upload(request: Request, uid: str, start: int = Query(..., ge=0)) -> dict:
        """Frames ``start..`` of the upload: a binary message with one uint8 (n, H, W, 3) array."""
        upload = state.upload(owner(request), uid)
        data = await request.body()
        return await run_in_threadpool(_store_chunk, upload, start, data)

    def _store_chunk(upload: _Upload, start: int, data: bytes) -> dict:
        _, arrays = _decode_body(data)
        if len(arrays) != 1:
            raise ApiError(422, "invalid_request", f"body: expected one array of frames, got {len(arrays)}")
        frames = arrays[0]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or min(frames.shape) == 0:
            raise ApiError(
                422,
                "invalid_request",
                f"body: frames must be a uint8 (n, H, W, 3) RGB array with n, H, W >= 1, got {frames.dtype} "
                f"{list(frames.shape)}",
            )
        n, height, width = frames.shape[:3]
        state.check_frames(start + n, width, height, "body")
        with upload.lock:
            hw = upload.frame_hw
            if hw is not None and frames.shape[1:3] != hw:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"body: frames are {frames.shape[2]}x{frames.shape[1]} (W x H) but this upload's frames are "
                    f"{hw[1]}x{hw[0]}; all frames of an upload have one size",
                )
            if upload.buffer is not None:
                if start > upload.count or start + n > len(upload.buffer):
                    raise ApiError(
                        422,
                        "invalid_request",
                        f"query field 'start': frames {start}..{start + n - 1} do not fit this upload of "
                        f"{len(upload.buffer)} frames holding frames 0..{upload.count - 1}; send frames from "
                        f"start={upload.count}",
                    )
                upload.buffer[start : start + n] = frames
            else:
                if start != upload.count:
                    raise ApiError(
                        422,
                        "invalid_request",
                        f"query field 'start' is {start} but this upload holds {upload.count} frames; send frames "
                        f"from start={upload.count}",
                    )
                if upload.nbytes() + frames.nbytes > state.limits.max_upload_bytes:
                    raise ApiError(
                        413, "too_large", _too_large(upload.nbytes() + frames.nbytes, state.limits.max_upload_bytes)
                    )
                with state.lock:
                    state.check_quota(upload.owner, frames.nbytes)
                state.check_memory(frames.nbytes, f"a chunk of {n} frames of {width}x{height} pixels")
                upload.chunks.append(np.array(frames))
            upload.count = max(upload.count, start + n)
            upload.last_used = time.monotonic()
            total = None if upload.buffer is None else len(upload.buffer)
            return {"upload": upload.id, "received": upload.count, "total": total}

    @app.delete("/uploads/{uid}")
    def delete_upload(request: Request, uid: str) -> dict:
        """Drop an upload (its frames are freed)."""
        upload = state.upload(owner(request), uid)
        with state.lock:
            state.uploads.pop(upload.id, None)
        return {"upload": upload.id, "deleted": True}

    # ------------------------------------------------------------ sessions
    @app.post("/sessions")
    def create_session(request: Request, body: SessionRequest) -> dict:
        """A tracking session on the frames and tracker of ``body`` (``SessionRequest``). Checked in
        this order, each before anything is allocated: the request's sizes and counts (422), the
        sessions of the token (429), the model's device and checkpoint, the frames (opened, not
        decoded: 403 / 400 / 422), and the memory the session needs (507); then the model is built."""
        who = owner(request)
        _check_session_request(body)
        state.expire()
        with state.lock:
            if state.count(who)[0] >= state.limits.max_sessions_per_token:
                raise ApiError(
                    429,
                    "too_many_sessions",
                    f"this token already has {state.limits.max_sessions_per_token} open sessions (the server's "
                    "--max-sessions); close sessions you no longer need (DELETE /sessions/ID) and try again",
                )
            state.pending[who] = state.pending.get(who, 0) + 1
        try:
            sam2 = body.model.engine == "sam2"
            model_bytes = 0
            if sam2:  # a bad device or checkpoint is refused before the frames are read
                model_bytes = state.unbuilt_model_bytes(state.model_key(body.model))
            image_size = body.model.image_size if sam2 else None

            def check_memory(count: int, width: int, height: int, frame_bytes: int) -> None:
                needed = estimate_session_bytes(width, height, frame_bytes, image_size, model_bytes)
                model = f" with a SAM 2 model at image_size {image_size}" if sam2 else ""
                state.check_memory(needed, f"a session on {count:,} frames of {width}x{height} pixels{model}")

            frames, shm, upload = _session_frames(body.frames, who, check_memory)
            try:
                tracker = _make_tracker(body, frames)
            except BaseException:
                if isinstance(frames, FrameSource):
                    frames.close()
                if shm is not None:
                    frames = None
                    with contextlib.suppress(BufferError, OSError):
                        shm.close()
                raise
            sid = uuid.uuid4().hex
            held = 0 if upload is None else frames.nbytes
            session = _Session(sid, who, tracker, body.model.engine, shm, held_bytes=held)
            with state.lock:
                state.sessions[sid] = session
                if upload is not None:
                    state.uploads.pop(upload.id, None)
        finally:
            with state.lock:
                state.pending[who] -= 1
        return {"session": sid, "num_frames": tracker.num_frames, "height": tracker.height, "width": tracker.width}

    def _check_session_request(body: SessionRequest) -> None:
        """422 ``limit_exceeded`` for sizes and counts of the request beyond the limits, and 403
        ``shm_not_allowed`` for a shared-memory name that ``create_shared_frames`` did not make."""
        limits, spec = state.limits, body.frames
        if body.model.image_size > limits.max_image_size:
            raise ApiError(
                422,
                "limit_exceeded",
                f"model.image_size is {body.model.image_size} but this server allows at most {limits.max_image_size} "
                "(--max-image-size; SAM 2 was trained at 1024): choose a smaller image size",
            )
        if spec.frame_indices is not None:
            state.check_frames(len(spec.frame_indices), 1, 1, "frames.frame_indices")
        if spec.size is not None:
            state.check_frames(1, spec.size[0], spec.size[1], "frames.size")
        if spec.shm is not None:
            if not is_shared_frames_name(spec.shm):
                raise ApiError(
                    403,
                    "shm_not_allowed",
                    f"frames.shm: {spec.shm[:80]!r} is not a block made by sam2s.serving.client.create_shared_frames (a name "
                    f"of its prefix and a random secret); this server attaches no other shared memory: create the "
                    "block with create_shared_frames, or upload the frames",
                )
            state.check_frames(spec.shape[0], spec.shape[2], spec.shape[1], "frames.shape")

    def _session_frames(
        spec: FramesSpec, who: str, check_memory: Callable[[int, int, int, int], None]
    ) -> tuple[Any, Any, _Upload | None]:
        """``(frames, shared memory or None, upload or None)`` of a session; calls
        ``check_memory(count, width, height, frame_bytes)`` once the frames' size is known, before
        they are decoded or joined."""
        if spec.path is not None:
            real = state.allowed_path(spec.path, "frames.path")
            with _engine_errors():
                source = open_frames(real)
            try:
                native = source.width * source.height * 3
                count = len(source) if spec.frame_indices is None else len(spec.frame_indices)
                state.check_frames(count, source.width, source.height, f"frames.path {spec.path!r}")
                if spec.frame_indices is not None or spec.size is not None:
                    with _engine_errors():
                        source = SelectedFrames(source, spec.frame_indices, spec.size)
                check_memory(
                    len(source), source.width, source.height, _FRAME_CACHE * source.width * source.height * 3 + native
                )
            except BaseException:
                source.close()
                raise
            return source, None, None
        if spec.shm is not None:
            try:
                shm = _attach_shared_memory(spec.shm)
            except (FileNotFoundError, OSError, ValueError) as error:
                raise ApiError(
                    400,
                    "shm_not_found",
                    f"frames.shm: shared memory {spec.shm!r} cannot be opened ({error}); it must be created by "
                    "a client on the same machine as the server and stay open while the session lives",
                ) from None
            try:
                need = math.prod(spec.shape)
                if shm.size < need:
                    raise ApiError(
                        400,
                        "invalid_request",
                        f"frames.shm: shared memory {spec.shm!r} holds {shm.size:,} bytes, fewer than the "
                        f"{need:,} of shape {list(spec.shape)} uint8",
                    )
                check_memory(spec.shape[0], spec.shape[2], spec.shape[1], 0)
            except BaseException:
                shm.close()
                raise
            return np.ndarray(spec.shape, dtype=np.uint8, buffer=shm.buf), shm, None
        upload = state.upload(who, spec.upload)
        with upload.lock:
            expected = None if upload.buffer is None else len(upload.buffer)
            if upload.count == 0 or (expected is not None and upload.count < expected):
                raise ApiError(
                    409,
                    "upload_incomplete",
                    f"frames.upload: upload {upload.id} holds {upload.count} of {expected or 'its'} frames; "
                    "send the remaining frames first (PUT /uploads/ID?start=K)",
                )
            height, width = upload.frame_hw
            joined = upload.buffer is None and len(upload.chunks) > 1
            check_memory(upload.count, width, height, upload.nbytes() if joined else 0)
            if upload.buffer is None:
                frames = np.concatenate(upload.chunks) if joined else upload.chunks[0]
                upload.chunks = [frames]
            else:
                frames = upload.buffer
        return frames, None, upload

    def _make_tracker(body: SessionRequest, frames: Any) -> Tracker:
        spec = body.model
        with _engine_errors():
            if spec.engine == "flow":
                if body.memory_params or body.memory != "sam2":
                    raise ApiError(
                        422,
                        "invalid_request",
                        "the flow engine has no memory policy: leave out memory and memory_params",
                    )
                from ..flow import FlowTracker

                return FlowTracker(frames, **spec.params)
            from ..tracker import VideoTracker

            model = state.model(spec)
            return VideoTracker(model, frames, memory=body.memory, **body.memory_params)

    @app.get("/sessions")
    def list_sessions(request: Request) -> dict:
        """The token's open sessions (``info`` of each); touches none of them."""
        who = owner(request)
        state.expire()
        with state.lock:
            mine = [s for s in state.sessions.values() if s.owner == who]
        return {"sessions": [s.info() for s in mine if s.tracker is not None]}

    @app.get("/sessions/{sid}")
    def get_session(request: Request, sid: str) -> dict:
        """One session: frames, object ids, jobs."""
        return state.session(owner(request), sid).info()

    @app.delete("/sessions/{sid}")
    def delete_session(request: Request, sid: str) -> dict:
        """Close a session: its job is cancelled, its frames released."""
        session = state.session(owner(request), sid)
        with state.lock:
            state.sessions.pop(session.id, None)
        session.close()
        return {"session": session.id, "closed": True}

    # ------------------------------------------------------------ prompts
    @app.post("/sessions/{sid}/objects/{oid}/points")
    def add_points(request: Request, sid: str, oid: int, body: PointsRequest) -> Response:
        """Clicks for object ``oid`` (``PointsRequest``); answers its mask or logits on the frame."""
        with state.session(owner(request), sid).changing() as tracker:
            state.check_new_object(tracker, oid)
            logits = tracker.add_points(
                body.frame, oid, body.points, body.labels, clear_old_points=body.clear_old_points
            )
        return _prompt_answer(body.frame, oid, logits, body.logits)

    @app.post("/sessions/{sid}/objects/{oid}/box")
    def add_box(request: Request, sid: str, oid: int, body: BoxRequest) -> Response:
        """A box (and optional clicks) for object ``oid`` (``BoxRequest``); answers as ``points``."""
        if (body.points is None) != (body.labels is None):
            raise ApiError(
                422, "invalid_request", "body fields 'points' and 'labels' go together: give both or neither"
            )
        with state.session(owner(request), sid).changing() as tracker:
            state.check_new_object(tracker, oid)
            logits = tracker.add_box(body.frame, oid, body.box, points=body.points, labels=body.labels)
        return _prompt_answer(body.frame, oid, logits, body.logits)

    @app.post("/sessions/{sid}/objects/{oid}/mask")
    async def add_mask(request: Request, sid: str, oid: int) -> Response:
        """A mask for object ``oid``: binary ``{"frame", "logits"}`` + one bool (H, W) array."""
        session = state.session(owner(request), sid)
        header, arrays = _decode_body(await request.body())
        frame = _int_field(header, "frame")
        want_logits = _bool_field(header, "logits", False)
        if len(arrays) != 1 or arrays[0].dtype != bool or arrays[0].ndim != 2:
            found = [f"{a.dtype} {list(a.shape)}" for a in arrays]
            raise ApiError(422, "invalid_request", f"body: expected one bool (H, W) mask array, got {found}")

        def run() -> np.ndarray:
            with session.changing() as tracker:
                state.check_new_object(tracker, oid)
                return tracker.add_mask(frame, oid, arrays[0])

        logits = await run_in_threadpool(run)
        return _prompt_answer(frame, oid, logits, want_logits)

    @app.delete("/sessions/{sid}/objects/{oid}")
    def remove_object(request: Request, sid: str, oid: int) -> dict:
        """Remove object ``oid`` and everything of it (404 ``object_not_found`` if absent)."""
        with state.session(owner(request), sid).changing() as tracker:
            tracker.remove_object(oid)
            return {"obj_ids": [int(k) for k in tracker.obj_ids]}

    @app.post("/sessions/{sid}/reset")
    def reset(request: Request, sid: str) -> dict:
        """Remove every object of the session."""
        with state.session(owner(request), sid).changing() as tracker:
            tracker.reset()
            return {"obj_ids": []}

    # ------------------------------------------------------------ jobs
    @app.post("/sessions/{sid}/jobs")
    def start_job(request: Request, sid: str, body: JobRequest) -> dict:
        """Start tracking ``body.passes`` in a background thread (409 while another job runs; 422
        for more than ``max_passes`` passes or ``JOB_FRAMES_PER_SESSION_FRAME`` times the session's
        frames in all; 507 when the results would not fit in the available memory)."""
        session = state.session(owner(request), sid)
        if len(body.passes) > state.limits.max_passes:
            raise ApiError(
                422,
                "limit_exceeded",
                f"body field 'passes' has {len(body.passes)} passes but this server runs at most "
                f"{state.limits.max_passes} per job (--max-passes): start several jobs one after the other",
            )
        with session.changing() as tracker:
            if not tracker.objects:
                raise ApiError(400, "invalid_request", "no object has a prompt yet: add points, a box or a mask first")
            ids = tracker.tracked_ids(body.obj_ids)
            passes = []
            for start, end, reverse in body.passes:
                order = tracker.frame_order(start, end, reverse, ids)
                passes.append((order[0], order[-1], reverse))
            job = _Job(uuid.uuid4().hex, passes, None if body.obj_ids is None else ids, body.logits)
            most = JOB_FRAMES_PER_SESSION_FRAME * tracker.num_frames
            if job.total > most:
                raise ApiError(
                    422,
                    "limit_exceeded",
                    f"body field 'passes' tracks {job.total:,} frames in all, more than {JOB_FRAMES_PER_SESSION_FRAME} "
                    f"times the session's {tracker.num_frames} frames ({most:,}): track each frame once or twice",
                )
            pixels = tracker.height * tracker.width
            per_frame = len(ids) * (4 * pixels if body.logits else (pixels + 7) // 8)
            state.check_memory(
                job.total * per_frame,
                f"this job's results ({job.total:,} frames x {len(ids)} objects of {tracker.width}x{tracker.height} "
                f"{'float32 logits' if body.logits else 'bit-packed masks'})",
            )
            finished = [j for j in session.jobs.values() if j is not session.running]
            for old in finished[: max(0, len(finished) - _JOBS_KEPT + 1)]:
                session.jobs.pop(old.id, None)
            session.jobs[job.id] = job
            session.running = job

            def on_exit() -> None:
                with session.lock:
                    if session.running is job:
                        session.running = None
                    session.last_used = time.monotonic()

            job.thread = threading.Thread(
                target=job.run, args=(tracker, on_exit), name=f"sam2s-job-{job.id[:8]}", daemon=True
            )
            job.thread.start()
        return {"job": job.id, "total": job.total}

    def _job(request: Request, sid: str, jid: str) -> _Job:
        session = state.session(owner(request), sid)
        with session.lock:
            job = session.jobs.get(jid)
        if job is None:
            raise ApiError(
                404, "job_not_found", f"job {jid!r} of session {sid} does not exist (or was dropped by newer jobs)"
            )
        return job

    @app.get("/sessions/{sid}/jobs/{jid}")
    def poll_job(request: Request, sid: str, jid: str, since: int = Query(0, ge=0)) -> Response:
        """Status and the results from ``since`` on, as a binary message: header ``{"status": "running" |
        "done" | "cancelled" | "failed", "done": frames produced, "total", "error": message or null,
        "since", "frames": [[frame_idx, [obj ids]], ...], "confidences": per listed frame, per object
        ``[predicted IoU, object score]`` or null (engines without them, e.g. flow)}`` and one array per
        listed frame, ``(n_obj, H, W)`` bool masks (float32 logits for a job started with
        ``"logits": true``); at most
        ``POLL_MAX_FRAMES`` frames and about ``POLL_MAX_BYTES`` bytes: poll again while ``since`` +
        the frames returned < ``done``."""
        job = _job(request, sid, jid)
        with job.lock:
            status, error, done = job.status, job.error, len(job.results)
        if since > done:
            raise ApiError(422, "invalid_request", f"query field 'since' is {since} but only {done} frames are done")
        frames, arrays, confidences, size = [], [], [], 0
        for i in range(since, min(done, since + POLL_MAX_FRAMES)):
            t, ids, array = job.frame(i)
            if arrays and size + array.nbytes > POLL_MAX_BYTES:
                break
            frames.append([t, ids])
            arrays.append(array)
            confidences.append(job.confidences[i])
            size += array.nbytes
        header = {"status": status, "done": done, "total": job.total, "error": error, "since": since, "frames": frames}
        header["confidences"] = confidences
        return _binary(header, arrays)

    @app.delete("/sessions/{sid}/jobs/{jid}")
    def cancel_job(request: Request, sid: str, jid: str) -> dict:
        """Cancel a job: it stops after the current frame; its results stay pollable."""
        job = _job(request, sid, jid)
        job.cancel.set()
        with job.lock:
            return {"job": job.id, "status": job.status, "done": len(job.results), "total": job.total}

    return app


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
    explicit = tokens is not None
    if tokens is None:
        env = os.environ.get(ENV_TOKEN, "").strip()
        tokens, explicit = ([env], True) if env else ([], False)
    tokens = list(tokens)
    loopback = is_loopback(host)
    if not loopback:
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
    generated = None
    if not tokens:
        generated = secrets.token_urlsafe(32)
        tokens = [generated]
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise ValueError("HTTPS needs both ssl_certfile and ssl_keyfile (PEM files); pass both or neither")
    app = create_app(tokens, allow_paths, limits)

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
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if info[0] == socket.AF_INET6 else bound[0]
    scheme = "https" if ssl_certfile else "http"
    line = f"{READY_PREFIX} {scheme}://{shown}:{bound[1]}" + (f" token={generated}" if generated else "")

    config = uvicorn.Config(
        app,
        ssl_certfile=None if ssl_certfile is None else os.fspath(ssl_certfile),
        ssl_keyfile=None if ssl_keyfile is None else os.fspath(ssl_keyfile),
        log_level=log_level,
        access_log=False,
        lifespan="on",
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _announce(line, ready_file)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn (>= 0.29) raises the SIGTERM / SIGINT it caught again after its graceful
            # shutdown, which ends the process with -15 (or KeyboardInterrupt): forget them once the
            # shutdown finished, so that the process exits with 0.
            with super().capture_signals():
                yield
                self._captured_signals = []

    try:
        _Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _announce(line: str, ready_file: str | Path | None) -> None:
    print(line, flush=True)
    if ready_file is not None:
        path = Path(ready_file)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(line + "\n", encoding="utf-8")
        os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Serve with options parsed by ``sam2s.serving.options.add_server_arguments`` (``sam2s serve``,
    ``python -m sam2s.serving.server``) until SIGTERM or Ctrl+C.

    Returns:
        The exit status: 0 after a graceful shutdown; 2 with a message on stderr for a refused
        configuration (a public address without a long token, a bad token file or limit, a
        missing root); 1 when the address cannot be bound.
    """
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
