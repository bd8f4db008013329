"""The tracking server's upload endpoints: ``POST /uploads`` (a new upload), ``PUT /uploads/{id}``
(a chunk of frames, a binary message) and ``DELETE /uploads/{id}``. Part of ``sam2s.serving.server``."""

from __future__ import annotations

import math
import time
import uuid
from typing import Optional

import numpy as np
from fastapi import FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from .routes_common import decode_body, owner, server_state
from .server_bodies import UploadRequest
from .server_errors import ApiError
from .server_guard import too_large
from .server_state import ServerState, Upload

__all__ = ["add_routes"]


def add_routes(app: FastAPI) -> None:
    """Add the endpoints of this module to ``app`` (``create_app``)."""
    app.add_api_route("/uploads", create_upload, methods=["POST"])
    app.add_api_route("/uploads/{uid}", put_upload, methods=["PUT"])
    app.add_api_route("/uploads/{uid}", delete_upload, methods=["DELETE"])


def create_upload(request: Request, body: Optional[UploadRequest] = None) -> dict:  # noqa: UP045
    """A new upload, optionally of a known ``shape`` [T, H, W, 3] (preallocated): 422 beyond the
    frame limits, 413 over the upload size or the token's quota, 507 beyond the available
    memory, 429 over the count."""
    state, who = server_state(request), owner(request)
    shape = None if body is None else body.shape
    nbytes = 0
    if shape is not None:
        if shape[3] != 3 or min(shape) <= 0:
            raise ApiError(422, "invalid_request", f"body field 'shape' must be [T, H, W, 3], got {list(shape)}")
        state.check_frames(shape[0], shape[2], shape[1], "body field 'shape'")
        nbytes = math.prod(shape)
        if nbytes > state.limits.max_upload_bytes:
            raise ApiError(413, "too_large", too_large(nbytes, state.limits.max_upload_bytes))
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
        state.uploads[uid] = Upload(uid, who, None if shape is None else tuple(shape))
    return {"upload": uid}


async def put_upload(request: Request, uid: str, start: int = Query(..., ge=0)) -> dict:
    """Frames ``start..`` of the upload: a binary message with one uint8 (n, H, W, 3) array."""
    state = server_state(request)
    upload = state.upload(owner(request), uid)
    data = await request.body()
    return await run_in_threadpool(store_chunk, state, upload, start, data)


def store_chunk(state: ServerState, upload: Upload, start: int, data: bytes) -> dict:
    """Store frames ``start..`` (the one array of the binary message ``data``) in ``upload``:
    422 for frames of another size or not contiguous with those received, 413 / 507 beyond the
    upload's size, the token's quota or the available memory. Returns ``{"upload", "received",
    "total"}``."""
    frames = _chunk_frames(data)
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
            _fill_buffer(upload, start, frames)
        else:
            _append_chunk(state, upload, start, frames)
        upload.count = max(upload.count, start + n)
        upload.last_used = time.monotonic()
        total = None if upload.buffer is None else len(upload.buffer)
        return {"upload": upload.id, "received": upload.count, "total": total}


def _chunk_frames(data: bytes) -> np.ndarray:
    """The uint8 (n, H, W, 3) frames of a chunk's binary message; 422 otherwise."""
    _, arrays = decode_body(data)
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
    return frames


def _fill_buffer(upload: Upload, start: int, frames: np.ndarray) -> None:
    """Copy ``frames`` into the preallocated buffer of ``upload`` at ``start`` (chunks may be
    re-sent); 422 beyond its end or after a gap. Call with ``upload.lock`` held."""
    n = len(frames)
    if start > upload.count or start + n > len(upload.buffer):
        raise ApiError(
            422,
            "invalid_request",
            f"query field 'start': frames {start}..{start + n - 1} do not fit this upload of "
            f"{len(upload.buffer)} frames holding frames 0..{upload.count - 1}; send frames from "
            f"start={upload.count}",
        )
    upload.buffer[start : start + n] = frames


def _append_chunk(state: ServerState, upload: Upload, start: int, frames: np.ndarray) -> None:
    """Append ``frames`` to ``upload`` (without a declared shape: in order, from ``start`` =
    frames received); 422 out of order, 413 / 507 beyond its size, the token's quota or the
    available memory. Call with ``upload.lock`` held."""
    n, height, width = frames.shape[:3]
    if start != upload.count:
        raise ApiError(
            422,
            "invalid_request",
            f"query field 'start' is {start} but this upload holds {upload.count} frames; send frames "
            f"from start={upload.count}",
        )
    if upload.nbytes() + frames.nbytes > state.limits.max_upload_bytes:
        raise ApiError(413, "too_large", too_large(upload.nbytes() + frames.nbytes, state.limits.max_upload_bytes))
    with state.lock:
        state.check_quota(upload.owner, frames.nbytes)
    state.check_memory(frames.nbytes, f"a chunk of {n} frames of {width}x{height} pixels")
    upload.chunks.append(np.array(frames))


def delete_upload(request: Request, uid: str) -> dict:
    """Drop an upload (its frames are freed)."""
    state = server_state(request)
    upload = state.upload(owner(request), uid)
    with state.lock:
        state.uploads.pop(upload.id, None)
    return {"upload": upload.id, "deleted": True}
