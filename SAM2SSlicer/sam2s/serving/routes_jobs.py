"""The tracking server's job endpoints: ``POST /sessions/{sid}/jobs`` (tracking in a background
thread), ``GET /sessions/{sid}/jobs/{jid}`` (its status and results, a binary message) and
``DELETE /sessions/{sid}/jobs/{jid}`` (cancel). Part of ``sam2s.serving.server``."""

from __future__ import annotations

import threading
import time
import uuid

from fastapi import FastAPI, Query, Request, Response

from ..session import Tracker
from .options import JOB_FRAMES_PER_SESSION_FRAME
from .routes_common import binary_answer, owner, server_state
from .server_bodies import JobRequest
from .server_errors import ApiError
from .server_state import Job, ServerSession, ServerState

__all__ = ["JOBS_KEPT", "POLL_MAX_BYTES", "POLL_MAX_FRAMES", "add_routes"]

POLL_MAX_FRAMES = 64
"""Most frames one job poll returns."""

POLL_MAX_BYTES = 32 * 2**20
"""A job poll stops adding frames once its arrays reach this many bytes (at least one frame)."""

JOBS_KEPT = 2
"""Finished jobs kept per session (with their results), besides the running one."""


def add_routes(app: FastAPI) -> None:
    """Add the endpoints of this module to ``app`` (``create_app``)."""
    app.add_api_route("/sessions/{sid}/jobs", start_job, methods=["POST"])
    app.add_api_route("/sessions/{sid}/jobs/{jid}", poll_job, methods=["GET"])
    app.add_api_route("/sessions/{sid}/jobs/{jid}", cancel_job, methods=["DELETE"])


def start_job(request: Request, sid: str, body: JobRequest) -> dict:
    """Start tracking ``body.passes`` in a background thread (409 while another job runs; 422
    for more than ``max_passes`` passes or ``JOB_FRAMES_PER_SESSION_FRAME`` times the session's
    frames in all; 507 when the results would not fit in the available memory)."""
    state = server_state(request)
    session = state.session(owner(request), sid)
    if len(body.passes) > state.limits.max_passes:
        raise ApiError(
            422,
            "limit_exceeded",
            f"body field 'passes' has {len(body.passes)} passes but this server runs at most "
            f"{state.limits.max_passes} per job (--max-passes): start several jobs one after the other",
        )
    with session.changing() as tracker:
        job = _plan_job(state, tracker, body)
        _launch(session, tracker, job)
    return {"job": job.id, "total": job.total}


def _plan_job(state: ServerState, tracker: Tracker, body: JobRequest) -> Job:
    """The job of ``body`` on ``tracker``, its passes resolved to frame ranges: 400 without prompts,
    422 beyond ``JOB_FRAMES_PER_SESSION_FRAME`` times the session's frames, 507 when its results
    would not fit in the available memory."""
    if not tracker.objects:
        raise ApiError(400, "invalid_request", "no object has a prompt yet: add points, a box or a mask first")
    ids = tracker.tracked_ids(body.obj_ids)
    passes = []
    for start, end, reverse in body.passes:
        order = tracker.frame_order(start, end, reverse, ids)
        passes.append((order[0], order[-1], reverse))
    job = Job(uuid.uuid4().hex, passes, None if body.obj_ids is None else ids, body.logits)
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
    return job


def _launch(session: ServerSession, tracker: Tracker, job: Job) -> None:
    """Make ``job`` the session's running job (dropping the oldest finished ones beyond
    ``JOBS_KEPT``) and start its thread; call inside ``session.changing()``."""
    finished = [j for j in session.jobs.values() if j is not session.running]
    for old in finished[: max(0, len(finished) - JOBS_KEPT + 1)]:
        session.jobs.pop(old.id, None)
    session.jobs[job.id] = job
    session.running = job

    def on_exit() -> None:
        with session.lock:
            if session.running is job:
                session.running = None
            session.last_used = time.monotonic()

    job.thread = threading.Thread(target=job.run, args=(tracker, on_exit), name=f"sam2s-job-{job.id[:8]}", daemon=True)
    job.thread.start()


def find_job(request: Request, sid: str, jid: str) -> Job:
    """Job ``jid`` of the token's session ``sid``; 404 ``job_not_found`` (or ``session_not_found``)."""
    session = server_state(request).session(owner(request), sid)
    with session.lock:
        job = session.jobs.get(jid)
    if job is None:
        raise ApiError(
            404, "job_not_found", f"job {jid!r} of session {sid} does not exist (or was dropped by newer jobs)"
        )
    return job


def poll_job(request: Request, sid: str, jid: str, since: int = Query(0, ge=0)) -> Response:
    """Status and the results from ``since`` on, as a binary message: header ``{"status": "running" |
    "done" | "cancelled" | "failed", "done": frames produced, "total", "error": message or null,
    "since", "frames": [[frame_idx, [obj ids]], ...], "confidences": per listed frame, per object
    ``[predicted IoU, object score]`` or null (engines without them, e.g. flow)}`` and one array per
    listed frame, ``(n_obj, H, W)`` bool masks (float32 logits for a job started with
    ``"logits": true``); at most
    ``POLL_MAX_FRAMES`` frames and about ``POLL_MAX_BYTES`` bytes: poll again while ``since`` +
    the frames returned < ``done``."""
    job = find_job(request, sid, jid)
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
    return binary_answer(header, arrays)


def cancel_job(request: Request, sid: str, jid: str) -> dict:
    """Cancel a job: it stops after the current frame; its results stay pollable."""
    job = find_job(request, sid, jid)
    job.cancel.set()
    with job.lock:
        return {"job": job.id, "status": job.status, "done": len(job.results), "total": job.total}
