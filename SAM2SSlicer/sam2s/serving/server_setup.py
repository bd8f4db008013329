"""How ``POST /sessions`` becomes a tracking session: the request's sizes checked against the
limits (``check_session_request``), its frames opened from a server-side path, a shared-memory
block or an upload (``session_frames``), the memory it needs estimated (``estimate_session_bytes``)
and compared with what is available, then its tracker made (``make_tracker``); ``open_session``
does all of it in order. No FastAPI here (errors are ``ApiError``)."""

from __future__ import annotations

import contextlib
import math
import uuid
from typing import Any, Callable

import numpy as np

from ..frames import FrameSource, open_frames
from ..resources import sam2_work_bytes
from ..session import Tracker
from .client import is_shared_frames_name
from .server_bodies import FramesSpec, SessionRequest
from .server_errors import ApiError, engine_errors
from .server_frames import FRAME_CACHE, SelectedFrames, attach_shared_memory
from .server_state import ServerSession, ServerState, Upload

__all__ = [
    "FRAME_BYTES_PER_PIXEL",
    "check_session_request",
    "estimate_session_bytes",
    "make_tracker",
    "open_session",
    "session_frames",
]

FRAME_BYTES_PER_PIXEL = 16
"""Working memory per pixel of a session's frames (float32 logits at the frames' resolution,
resizing), measured: 3840x2160 frames needed 107 MiB more than 320x240 ones at 256 px."""

MemoryCheck = Callable[[int, int, int, int], None]
"""``check_memory(count, width, height, frame_bytes)``: raises ``ApiError`` 507 when a session on
``count`` frames of ``width`` x ``height`` pixels, allocating ``frame_bytes`` for its frames, would
not fit in the available memory."""


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


def open_session(state: ServerState, who: str, body: SessionRequest) -> tuple[ServerSession, Tracker]:
    """A new session of owner ``who`` on the frames and tracker of ``body``, added to ``state``, and
    its tracker.
    Checked in this order, each before anything is allocated: the request's sizes and counts (422),
    the sessions of the token (429), the model's device and checkpoint, the frames (opened, not
    decoded: 403 / 400 / 422), and the memory the session needs (507); then the model is built.

    Raises:
        ApiError: as listed; the frames are released again when the tracker cannot be made.
    """
    check_session_request(state, body)
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
        frames, shm, upload = session_frames(state, body.frames, who, _memory_check(state, body))
        try:
            tracker = make_tracker(state, body, frames)
        except BaseException:
            if isinstance(frames, FrameSource):
                frames.close()
            if shm is not None:
                frames = None
                with contextlib.suppress(BufferError, OSError):
                    shm.close()
            raise
        held = 0 if upload is None else frames.nbytes
        session = ServerSession(uuid.uuid4().hex, who, tracker, body.model.engine, shm, held_bytes=held)
        with state.lock:
            state.sessions[session.id] = session
            if upload is not None:
                state.uploads.pop(upload.id, None)
    finally:
        with state.lock:
            state.pending[who] -= 1
    return session, tracker


def _memory_check(state: ServerState, body: SessionRequest) -> MemoryCheck:
    """The ``MemoryCheck`` of a session of ``body``; for SAM 2 the model's device and checkpoint
    are checked here (a bad one is refused before the frames are read), and a model not built yet
    counts with its checkpoint's size."""
    sam2 = body.model.engine == "sam2"
    model_bytes = state.unbuilt_model_bytes(state.model_key(body.model)) if sam2 else 0
    image_size = body.model.input_size if sam2 else None

    def check_memory(count: int, width: int, height: int, frame_bytes: int) -> None:
        needed = estimate_session_bytes(width, height, frame_bytes, image_size, model_bytes)
        model = f" with a SAM 2 model at image_size {image_size}" if sam2 else ""
        state.check_memory(needed, f"a session on {count:,} frames of {width}x{height} pixels{model}")

    return check_memory


def check_session_request(state: ServerState, body: SessionRequest) -> None:
    """422 ``limit_exceeded`` for sizes and counts of the request beyond the limits, and 403
    ``shm_not_allowed`` for a shared-memory name that ``create_shared_frames`` did not make."""
    limits, spec = state.limits, body.frames
    if body.model.engine == "sam2" and body.model.input_size > limits.max_image_size:
        raise ApiError(
            422,
            "limit_exceeded",
            f"model.image_size is {body.model.input_size} but this server allows at most {limits.max_image_size} "
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


def session_frames(
    state: ServerState, spec: FramesSpec, who: str, check_memory: MemoryCheck
) -> tuple[Any, Any, Upload | None]:
    """``(frames, shared memory or None, upload or None)`` of a session; calls
    ``check_memory(count, width, height, frame_bytes)`` once the frames' size is known, before
    they are decoded or joined."""
    if spec.path is not None:
        return _path_frames(state, spec, check_memory), None, None
    if spec.shm is not None:
        return _shared_frames(spec, check_memory)
    return _upload_frames(state, spec, who, check_memory)


def _path_frames(state: ServerState, spec: FramesSpec, check_memory: MemoryCheck) -> FrameSource:
    """The frames of a server-side video file or image folder (``spec.path``, under an allowed
    root), selected and resized as ``spec`` says, decoded lazily."""
    real = state.allowed_path(spec.path, "frames.path")
    with engine_errors():
        source = open_frames(real)
    try:
        native = source.width * source.height * 3
        count = len(source) if spec.frame_indices is None else len(spec.frame_indices)
        state.check_frames(count, source.width, source.height, f"frames.path {spec.path!r}")
        if spec.frame_indices is not None or spec.size is not None:
            with engine_errors():
                source = SelectedFrames(source, spec.frame_indices, spec.size)
        check_memory(len(source), source.width, source.height, FRAME_CACHE * source.width * source.height * 3 + native)
    except BaseException:
        source.close()
        raise
    return source


def _shared_frames(spec: FramesSpec, check_memory: MemoryCheck) -> tuple[np.ndarray, Any, None]:
    """The frames in a client's shared-memory block (``spec.shm``, used without copying) and the
    attached block."""
    try:
        shm = attach_shared_memory(spec.shm)
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


def _upload_frames(
    state: ServerState, spec: FramesSpec, who: str, check_memory: MemoryCheck
) -> tuple[np.ndarray, None, Upload]:
    """The frames of ``who``'s complete upload ``spec.upload`` (its chunks joined) and the upload;
    409 ``upload_incomplete`` while frames are missing."""
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


def make_tracker(state: ServerState, body: SessionRequest, frames: Any) -> Tracker:
    """The tracker of ``body`` on ``frames``: a ``FlowTracker``, or a ``VideoTracker`` with the
    model of ``body.model`` (``ServerState.model``: built the first time, then cached); the
    engine's errors as ``ApiError`` (422 for memory settings given to the flow engine)."""
    spec = body.model
    with engine_errors():
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
