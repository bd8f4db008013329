"""What a tracking server holds: uploads (``Upload``), tracking jobs (``Job``), sessions
(``ServerSession``) and ``ServerState`` (all of them, per token; the limits and their checks;
server-side paths; the cache of built models). No FastAPI here: the errors are ``ApiError``
(``sam2s.serving.server_errors``)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..checkpoints import get_info, resolve_checkpoint
from ..modelspec import ModelSpec
from ..resources import available_memory_bytes
from ..session import MAX_OBJECT_ID, MIN_OBJECT_ID, Tracker, TrackingPlan
from .access import PathNotAllowedError, check_readable, real_roots
from .options import ServerLimits
from .server_bodies import ModelRequest
from .server_errors import ApiError, engine_errors

__all__ = ["Job", "ServerSession", "ServerState", "Upload"]

_GIB = float(2**30)
_JOIN_TIMEOUT_S = 60.0  # how long closing a session waits for its job thread to stop


class Upload:
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
        """``(H, W)`` in pixels of the upload's frames, or None before the first chunk (no shape)."""
        if self.buffer is not None:
            return self.buffer.shape[1], self.buffer.shape[2]
        return (self.chunks[0].shape[1], self.chunks[0].shape[2]) if self.chunks else None

    def nbytes(self) -> int:
        """Bytes of the frames held (the preallocated buffer, or the chunks received)."""
        return self.buffer.nbytes if self.buffer is not None else sum(c.nbytes for c in self.chunks)


class Job:
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
        """Track the passes on ``tracker`` (the job's thread), storing each frame's result (bit-packed
        masks, or float32 logits); ends ``"done"``, ``"cancelled"`` or ``"failed"`` (with the error's
        message, never raised), then calls ``on_exit``."""
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
        """Result ``i``: ``(frame_idx, obj_ids, array)``, ``array`` ``(len(obj_ids), H, W)`` bool masks
        or float32 logits (a job started with ``logits``)."""
        t, ids, stored, shape = self.results[i]
        if self.logits:
            return t, ids, stored
        return t, ids, np.unpackbits(stored, count=math.prod(shape)).astype(bool).reshape(shape)


class ServerSession:
    """One tracking session: its tracker, owner, lock and jobs; ``held_bytes``: the bytes of the
    frames it took from an upload (counted in its token's quota)."""

    def __init__(
        self, sid: str, owner: str, tracker: Tracker, engine: str, shm: Any = None, held_bytes: int = 0
    ) -> None:
        self.id, self.owner, self.tracker, self.engine, self.shm = sid, owner, tracker, engine, shm
        self.held_bytes = int(held_bytes)
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.running: Job | None = None
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
            with engine_errors():
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


class ServerState:
    """Everything a server holds: sessions, uploads, cached models, limits.

    Args:
        tokens: the accepted bearer tokens.
        allow_paths: the roots of the server-side paths clients may name.
        limits: the server's ``ServerLimits``.
        available_memory: returns the bytes of memory available now, or None when unknown
            (``check_memory``); default ``sam2s.resources.available_memory_bytes``.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        allow_paths: Sequence[str | Path],
        limits: ServerLimits,
        available_memory: Callable[[], int | None] = available_memory_bytes,
    ) -> None:
        self.available_memory = available_memory
        self.tokens = [t.encode("utf-8") for t in tokens]
        self.roots = real_roots(allow_paths)
        self.limits = limits
        self.lock = threading.Lock()
        self.sessions: dict[str, ServerSession] = {}
        self.uploads: dict[str, Upload] = {}
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

    def session(self, owner: str, sid: str) -> ServerSession:
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

    def upload(self, owner: str, uid: str) -> Upload:
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

    def check_memory(self, needed: int, what: str) -> None:
        """507 ``insufficient_memory`` when ``needed`` bytes exceed the available memory
        (``available_memory()``; nothing is checked when it is unknown)."""
        available = self.available_memory()
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
            with engine_errors():
                resolve_device(device)
        except RuntimeError as error:  # a device this machine lacks: the request's fault, not the server's
            raise ApiError(400, "device_unavailable", f"model.device: {error}") from None
        ckpt = self.checkpoint(spec)
        stat = os.stat(ckpt)
        if spec.precision is None:  # the behaviour of servers before the field (protocol 1)
            precision = "bf16" if device.startswith("cuda") else "fp32"
        else:
            precision = resolve_precision(spec.precision, device)
        return (spec.config, ckpt, stat.st_mtime_ns, stat.st_size, spec.input_size, device, precision)

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
