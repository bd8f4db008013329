"""The tracking server's session endpoints: sessions (``POST`` / ``GET /sessions``, ``GET`` /
``DELETE /sessions/{sid}``) and their prompts and changes (``.../objects/{oid}/points``, ``box``,
``mask``, ``DELETE .../objects/{oid}``, ``.../reset``). Part of ``sam2s.serving.server``."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from .routes_common import bool_field, decode_body, int_field, owner, prompt_answer, server_state
from .server_bodies import BoxRequest, PointsRequest, SessionRequest
from .server_errors import ApiError
from .server_setup import open_session

__all__ = ["add_routes"]


def add_routes(app: FastAPI) -> None:
    """Add the endpoints of this module to ``app`` (``create_app``)."""
    app.add_api_route("/sessions", create_session, methods=["POST"])
    app.add_api_route("/sessions", list_sessions, methods=["GET"])
    app.add_api_route("/sessions/{sid}", get_session, methods=["GET"])
    app.add_api_route("/sessions/{sid}", delete_session, methods=["DELETE"])
    app.add_api_route("/sessions/{sid}/objects/{oid}/points", add_points, methods=["POST"])
    app.add_api_route("/sessions/{sid}/objects/{oid}/box", add_box, methods=["POST"])
    app.add_api_route("/sessions/{sid}/objects/{oid}/mask", add_mask, methods=["POST"])
    app.add_api_route("/sessions/{sid}/objects/{oid}", remove_object, methods=["DELETE"])
    app.add_api_route("/sessions/{sid}/reset", reset, methods=["POST"])


# ------------------------------------------------------------------------------------------------
# Sessions
# ------------------------------------------------------------------------------------------------


def create_session(request: Request, body: SessionRequest) -> dict:
    """A tracking session on the frames and tracker of ``body`` (``SessionRequest``). Checked in
    this order, each before anything is allocated: the request's sizes and counts (422), the
    sessions of the token (429), the model's device and checkpoint, the frames (opened, not
    decoded: 403 / 400 / 422), and the memory the session needs (507); then the model is built."""
    session, tracker = open_session(server_state(request), owner(request), body)
    return {"session": session.id, "num_frames": tracker.num_frames, "height": tracker.height, "width": tracker.width}


def list_sessions(request: Request) -> dict:
    """The token's open sessions (``info`` of each); touches none of them."""
    state, who = server_state(request), owner(request)
    state.expire()
    with state.lock:
        mine = [s for s in state.sessions.values() if s.owner == who]
    return {"sessions": [s.info() for s in mine if s.tracker is not None]}


def get_session(request: Request, sid: str) -> dict:
    """One session: frames, object ids, jobs."""
    return server_state(request).session(owner(request), sid).info()


def delete_session(request: Request, sid: str) -> dict:
    """Close a session: its job is cancelled, its frames released."""
    state = server_state(request)
    session = state.session(owner(request), sid)
    with state.lock:
        state.sessions.pop(session.id, None)
    session.close()
    return {"session": session.id, "closed": True}


# ------------------------------------------------------------------------------------------------
# Prompts and changes
# ------------------------------------------------------------------------------------------------


def add_points(request: Request, sid: str, oid: int, body: PointsRequest) -> Response:
    """Clicks for object ``oid`` (``PointsRequest``); answers its mask or logits on the frame."""
    state = server_state(request)
    with state.session(owner(request), sid).changing() as tracker:
        state.check_new_object(tracker, oid)
        logits = tracker.add_points(body.frame, oid, body.points, body.labels, clear_old_points=body.clear_old_points)
    return prompt_answer(body.frame, oid, logits, body.logits)


def add_box(request: Request, sid: str, oid: int, body: BoxRequest) -> Response:
    """A box (and optional clicks) for object ``oid`` (``BoxRequest``); answers as ``points``."""
    if (body.points is None) != (body.labels is None):
        raise ApiError(422, "invalid_request", "body fields 'points' and 'labels' go together: give both or neither")
    state = server_state(request)
    with state.session(owner(request), sid).changing() as tracker:
        state.check_new_object(tracker, oid)
        logits = tracker.add_box(body.frame, oid, body.box, points=body.points, labels=body.labels)
    return prompt_answer(body.frame, oid, logits, body.logits)


async def add_mask(request: Request, sid: str, oid: int) -> Response:
    """A mask for object ``oid``: binary ``{"frame", "logits"}`` + one bool (H, W) array."""
    state = server_state(request)
    session = state.session(owner(request), sid)
    header, arrays = decode_body(await request.body())
    frame = int_field(header, "frame")
    want_logits = bool_field(header, "logits", False)
    if len(arrays) != 1 or arrays[0].dtype != bool or arrays[0].ndim != 2:
        found = [f"{a.dtype} {list(a.shape)}" for a in arrays]
        raise ApiError(422, "invalid_request", f"body: expected one bool (H, W) mask array, got {found}")

    def run() -> np.ndarray:
        with session.changing() as tracker:
            state.check_new_object(tracker, oid)
            return tracker.add_mask(frame, oid, arrays[0])

    logits = await run_in_threadpool(run)
    return prompt_answer(frame, oid, logits, want_logits)


def remove_object(request: Request, sid: str, oid: int) -> dict:
    """Remove object ``oid`` and everything of it (404 ``object_not_found`` if absent)."""
    with server_state(request).session(owner(request), sid).changing() as tracker:
        tracker.remove_object(oid)
        return {"obj_ids": [int(k) for k in tracker.obj_ids]}


def reset(request: Request, sid: str) -> dict:
    """Remove every object of the session."""
    with server_state(request).session(owner(request), sid).changing() as tracker:
        tracker.reset()
        return {"obj_ids": []}
