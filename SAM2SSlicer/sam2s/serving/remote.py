"""Remote tracking sessions of the sam2s tracking server, as the client sees them:
``RemoteSession`` (a ``sam2s.Tracker`` whose frames and model live in the server), the stream of
one tracking job (``RemoteRun``), the job itself (``RemoteJob``) and what one poll of it returns
(``JobUpdate``). Standard library and numpy only, like ``sam2s.serving.client``, which creates
these objects (``Client.create_session``, ``Client.session``) and re-exports them.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from ..session import TrackedFrame, Tracker, TrackingPlan
from . import protocol
from .client_errors import ServerError
from .steps import Steps, drive

__all__ = ["TERMINAL_STATUSES", "JobUpdate", "RemoteJob", "RemoteRun", "RemoteSession", "path_segment"]

TERMINAL_STATUSES = ("done", "cancelled", "failed")
"""Job statuses after which nothing more is produced."""


class _Requester(Protocol):
    """What a remote session needs of its ``sam2s.serving.client.Client``: ``begin`` (a request in
    flight, a ``sam2s.serving.steps`` call), ``send_and_forget`` and ``quick_timeout``."""

    quick_timeout: float

    def send_and_forget(self, call: Any) -> None: ...

    def begin(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        body: bytes | None = None,
        query: dict[str, Any] | None = None,
        binary: bool = False,
        timeout: float | None = None,
    ) -> Any: ...


def path_segment(value: str) -> str:
    """``value`` quoted as one segment of a URL path (``/`` too), e.g. a session or job id."""
    return urllib.parse.quote(str(value), safe="")


def _points(points: Any) -> list[list[float]]:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2).tolist()


def _labels(labels: Any) -> list[int]:
    return [int(v) for v in np.asarray(labels).reshape(-1)]


@dataclass
class JobUpdate:
    """What one ``RemoteJob.poll`` returned.

    Attributes:
        status: ``"running"``, ``"done"``, ``"cancelled"`` or ``"failed"``.
        done: frames the job has produced so far (all passes together).
        total: frames the job produces when it is not cancelled.
        error: the failure's message (``"ExceptionType: text"``) when failed, else None.
        frames: the new results, in order: ``(frame_idx, obj_ids, array)`` with ``array``
            ``(len(obj_ids), H, W)`` bool masks, or float32 logits if the job was started with
            ``logits=True``; ``obj_ids`` in session order. A poll returns a bounded batch: more
            may remain although the status is final (see ``RemoteJob.finished``).
        confidences: per frame of ``frames``, per object: ``(predicted IoU, object score)`` of the
            model (``sam2s.VideoTracker.confidence``), or None (the flow engine; a server that does
            not send them gives an empty list).
    """

    status: str
    done: int
    total: int
    error: str | None
    frames: list[tuple[int, list[int], np.ndarray]] = field(default_factory=list)
    confidences: list[list[tuple[float, float] | None]] = field(default_factory=list)


class RemoteSession(Tracker):
    """A tracking session on the server that implements the ``sam2s.Tracker`` contract, so every
    front end drives it as an engine session in this process (``Tracker.run`` is its stream).

    Attributes:
        client: the ``Client``. id: the session id. num_frames, height, width: T, H, W.
        objects: the ids prompted through this object (or listed by the server on reattach).
        on_close: called once by :meth:`close` after the server session is closed (e.g. to free
            the shared memory its frames came in), or None.

    It holds no frames here (``frames`` is None). Prompt methods return the object's ``(H, W)``
    bool mask on the frame (True inside; ``> 0`` works on it as on logits), or its float32
    logits with ``logits=True``. They raise ``ServerError`` with code ``invalid_prompt`` (400: bad
    frame, object id, points, labels, box or mask), ``SessionNotFound``, ``ServerBusy`` (409: a
    job of this session runs).
    """

    def __init__(self, client: _Requester, session_id: str, num_frames: int, height: int, width: int) -> None:
        # The frames live in the server: Tracker.__init__ (which opens frames here) is not called.
        self.client, self.id = client, session_id
        self.frames = None
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.objects: dict[int, Any] = {}
        self.on_close: Callable[[], None] | None = None
        self._propagating = False
        self._confidences: dict[tuple[int, int], tuple[float, float]] = {}
        self._path = f"/sessions/{path_segment(session_id)}"

    def __repr__(self) -> str:
        return f"RemoteSession({self.id!r}, T={self.num_frames}, H={self.height}, W={self.width})"

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def steps(self, method: str, *args: Any, **kwargs: Any) -> Steps:
        """``Tracker.steps`` in the server: the requests of ``method`` (``add_points``, ``add_box``,
        ``add_mask``, ``remove_object``, ``run``) are yielded as ``sam2s.serving.steps`` calls, so
        that a GUI timer advances them without waiting."""
        return (yield from getattr(self, f"_{method}_steps")(*args, **kwargs))

    def _prompt_steps(self, obj_id: int, kind: str, json_body: Any = None, body: bytes | None = None) -> Steps:
        header, arrays = yield self.client.begin(
            "POST", f"{self._path}/objects/{int(obj_id)}/{kind}", json_body=json_body, body=body, binary=True
        )
        if len(arrays) != 1:
            raise ServerError(200, "bad_response", f"a prompt answer holds one array, got {len(arrays)}")
        self.objects.setdefault(int(obj_id))
        return arrays[0]

    def add_points(
        self,
        frame_idx: int,
        obj_id: int,
        points: Sequence | np.ndarray,
        labels: Sequence | np.ndarray,
        clear_old_points: bool = True,
        logits: bool = False,
    ) -> np.ndarray:
        """Clicks ``points`` ``(N, 2)`` pixels ``(x, y)`` with ``labels`` ``(N,)`` 1 / 0 for ``obj_id``
        on ``frame_idx``; ``clear_old_points=False`` appends to the frame's clicks. Returns the
        ``(H, W)`` bool mask, or float32 logits with ``logits=True``."""
        return drive(self._add_points_steps(frame_idx, obj_id, points, labels, clear_old_points, logits))

    def _add_points_steps(
        self, frame_idx: int, obj_id: int, points: Any, labels: Any, clear_old_points: bool = True, logits: bool = False
    ) -> Steps:
        body = {
            "frame": int(frame_idx),
            "points": _points(points),
            "labels": _labels(labels),
            "clear_old_points": bool(clear_old_points),
            "logits": bool(logits),
        }
        return (yield from self._prompt_steps(obj_id, "points", json_body=body))

    def add_box(
        self,
        frame_idx: int,
        obj_id: int,
        box: Sequence | np.ndarray,
        points: Sequence | np.ndarray | None = None,
        labels: Sequence | np.ndarray | None = None,
        logits: bool = False,
    ) -> np.ndarray:
        """A box ``[x0, y0, x1, y1]`` pixels (and optional clicks) for ``obj_id`` on ``frame_idx``;
        returns the ``(H, W)`` bool mask, or float32 logits with ``logits=True``."""
        return drive(self._add_box_steps(frame_idx, obj_id, box, points, labels, logits))

    def _add_box_steps(
        self, frame_idx: int, obj_id: int, box: Any, points: Any = None, labels: Any = None, logits: bool = False
    ) -> Steps:
        body: dict[str, Any] = {
            "frame": int(frame_idx),
            "box": [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)],
            "logits": bool(logits),
        }
        if points is not None or labels is not None:
            body["points"] = _points([] if points is None else points)
            body["labels"] = _labels([] if labels is None else labels)
        return (yield from self._prompt_steps(obj_id, "box", json_body=body))

    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray, logits: bool = False) -> np.ndarray:
        """A mask ``(H, W)`` (bool, or 0 / 1 values; row y down) for ``obj_id`` on ``frame_idx``;
        returns the ``(H, W)`` bool mask, or float32 logits with ``logits=True``.

        Raises:
            ValueError: ``mask`` is not two-dimensional or holds values other than 0 / 1.
        """
        return drive(self._add_mask_steps(frame_idx, obj_id, mask, logits))

    def _add_mask_steps(self, frame_idx: int, obj_id: int, mask: np.ndarray, logits: bool = False) -> Steps:
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f"mask must be an (H, W) array, got shape {m.shape}")
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise ValueError("mask values must be 0/1 or bool; threshold a probability map first")
            m = m.astype(bool)
        body = protocol.encode({"frame": int(frame_idx), "logits": bool(logits)}, [m])
        return (yield from self._prompt_steps(obj_id, "mask", body=body))

    def remove_object(self, obj_id: int) -> None:
        """Remove ``obj_id`` and everything of it (``ServerError`` code ``object_not_found`` if absent)."""
        drive(self._remove_object_steps(obj_id))

    def _remove_object_steps(self, obj_id: int) -> Steps:
        yield self.client.begin("DELETE", f"{self._path}/objects/{int(obj_id)}")
        self.objects.pop(int(obj_id), None)

    def reset(self) -> None:
        """Remove every object."""
        self.client.begin("POST", f"{self._path}/reset").wait()
        self.objects.clear()
        self._confidences.clear()

    def confidence(self, obj_id: int, frame_idx: int) -> tuple[float, float] | None:
        """``(predicted_iou, object_score)`` the server sent with ``obj_id``'s latest tracked result
        on ``frame_idx`` (``Tracker.confidence``); None for a prompt result or an engine without them."""
        return self._confidences.get((int(obj_id), int(frame_idx)))

    def propagate(
        self,
        start: int | None = None,
        end: int | None = None,
        reverse: bool = False,
        obj_ids: Iterable[int] | None = None,
    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
        """``Tracker.propagate`` as one server job of one pass, polled until it ends; yields
        ``(frame_idx, ids, masks)`` with ``(len(ids), H, W)`` bool masks. Closing the generator
        early cancels the job. Raises ``ServerError`` as ``start_job`` and ``RemoteJob.poll``."""
        plan = TrackingPlan(((start, end, reverse),), None if obj_ids is None else tuple(obj_ids))
        stream = self.run(plan)
        try:
            for tracked in stream:
                yield tracked.frame_idx, tracked.obj_ids, tracked.logits
        finally:
            stream.close()

    def run(self, plan: TrackingPlan, cancel: threading.Event | None = None) -> RemoteRun:
        """``Tracker.run`` in the server: one job for all of ``plan``'s passes (``start_job``), whose
        frames the returned ``RemoteRun`` yields as they arrive. Iterating waits for them (a
        poll every ``RemoteRun.POLL_S``); a GUI calls ``RemoteRun.ready()`` from a timer instead.
        ``cancel`` set: the job is cancelled at the next poll. ``plan.keep_tracked`` does not
        apply (the server's tracker keeps its state).

        Raises:
            ServerError: as ``start_job`` (the job starts at once, before the first frame).
        """
        return drive(self._run_steps(plan, cancel))

    def _run_steps(self, plan: TrackingPlan, cancel: threading.Event | None = None) -> Steps:
        job = yield from self._start_job_steps(plan.passes, obj_ids=plan.obj_ids)
        return RemoteRun(self, job, cancel)

    def info(self) -> dict:
        """``{"session", "engine", "num_frames", "height", "width", "obj_ids", "jobs", "running_job"}``."""
        return self.client.begin("GET", self._path, timeout=self.client.quick_timeout).wait()

    def start_job(
        self, passes: Sequence[tuple[int, int, bool]], obj_ids: Sequence[int] | None = None, logits: bool = False
    ) -> RemoteJob:
        """Start tracking in the background: each pass ``(start, end, reverse)`` (frame indices, both
        included; None for the engine's default) is one ``propagate`` call, in order.

        Args:
            passes: e.g. ``[(k, T - 1, False), (k, 0, True)]`` for forward then backward from k.
            obj_ids: the objects to track (None: all).
            logits: results as float32 logits instead of bool masks.

        Returns:
            The ``RemoteJob`` (its ``total``: the frames it will produce).

        Raises:
            ServerBusy: a job of this session runs. ServerError: code ``invalid_prompt`` (bad
            frames, no prompt), ``object_not_found``.
        """
        return drive(self._start_job_steps(passes, obj_ids, logits))

    def _start_job_steps(
        self, passes: Sequence[tuple[int, int, bool]], obj_ids: Sequence[int] | None = None, logits: bool = False
    ) -> Steps:
        body = {
            "passes": [[None if s is None else int(s), None if e is None else int(e), bool(r)] for s, e, r in passes],
            "obj_ids": None if obj_ids is None else [int(k) for k in obj_ids],
            "logits": bool(logits),
        }
        answer = yield self.client.begin("POST", f"{self._path}/jobs", json_body=body)
        return RemoteJob(self, answer["job"], answer["total"])

    def close(self, wait: bool = True) -> None:
        """Close the session on the server (cancels its job), then call ``on_close``; closing a
        session that is already gone (closed, expired, server stopped) raises nothing. The request
        takes ``client.quick_timeout`` at most; ``wait=False`` sends it without waiting for the
        answer (a GUI; a server that missed it expires the idle session)."""
        try:
            call = self.client.begin("DELETE", self._path, timeout=self.client.quick_timeout)
            if wait:
                call.wait()
            else:
                self.client.send_and_forget(call)
        except ServerError:
            pass
        finally:
            release, self.on_close = self.on_close, None
            if release is not None:
                release()


class RemoteRun:
    """The stream of one server job (``RemoteSession.run``): an iterator of ``sam2s.TrackedFrame``
    that waits for frames, and :meth:`ready` that never waits.

    Attributes:
        job: the ``RemoteJob``. status: its status (the last poll's, or the cancel's answer).
        error: the server's failure message (``"Type: text"``) or None. total: frames it produces
        unless cancelled.
    """

    POLL_S = 0.05
    """Seconds between polls while iterating finds no new frame."""

    def __init__(self, session: RemoteSession, job: RemoteJob, cancel: threading.Event | None = None) -> None:
        self.session, self.job, self.cancel_event = session, job, cancel
        self.total = job.total
        self.error: str | None = None
        self._done = 0
        self._cancelled = False
        self._buffer: list[TrackedFrame] = []

    @property
    def finished(self) -> bool:
        """True once the job ended and every frame was received."""
        return self.job.finished

    @property
    def status(self) -> str:
        """``"running"``, ``"done"``, ``"cancelled"`` or ``"failed"``: the job's, as the last poll or
        the cancel's answer gave it (a cancel may end the job without another poll)."""
        return self.job.status

    def cancel(self) -> None:
        """Ask the server to stop the job after its current frame (once; errors ignored: a
        server that is gone stops anyway). Frames done stay receivable."""
        drive(self._cancel_steps())

    def _cancel_steps(self) -> Steps:
        if not self._cancelled:
            self._cancelled = True
            try:
                yield from self.job.cancel_steps()
            except ServerError:
                pass

    def ready(self) -> list[TrackedFrame]:
        """The frames the server finished since the last call: one request, no waiting for
        tracking. Raises ``ServerError`` (e.g. ``ServerUnavailable``: the server is gone)."""
        return drive(self.ready_steps())

    def ready_steps(self) -> Steps:
        """:meth:`ready` as steps (``sam2s.serving.steps``): the cancel (when ``cancel_event`` is
        set) and the poll are calls with the client's ``quick_timeout``."""
        if self.cancel_event is not None and self.cancel_event.is_set():
            yield from self._cancel_steps()
        if self.job.finished:
            return []
        update = yield from self.job.poll_steps()
        self.error = update.error
        frames = []
        for k, (frame_idx, ids, masks) in enumerate(update.frames):
            scores = update.confidences[k] if k < len(update.confidences) else [None] * len(ids)
            for obj_id, value in zip(ids, scores):
                if value is not None:
                    self.session._confidences[(int(obj_id), int(frame_idx))] = value
            self._done += 1
            frames.append(TrackedFrame(int(frame_idx), list(ids), masks, list(scores), self._done, self.total))
        return frames

    def __iter__(self) -> RemoteRun:
        return self

    def __next__(self) -> TrackedFrame:
        """The next frame, polling until it comes. Raises ``StopIteration`` at the job's end and
        ``ServerError`` for a failed job (``code`` ``"job_failed"``) or a lost server."""
        while not self._buffer:
            if self.job.finished:
                if self.status == "failed":
                    raise ServerError(200, "job_failed", f"tracking failed in the server ({self.error})")
                raise StopIteration
            self._buffer.extend(self.ready())
            if not self._buffer and not self.job.finished:
                time.sleep(self.POLL_S)
        return self._buffer.pop(0)

    def close(self) -> None:
        """Stop early: cancel the job if it still runs (``contextlib.closing`` works on a run)."""
        if not self.job.finished:
            self.cancel()


class RemoteJob:
    """A tracking job on the server; ``poll`` it until ``finished``.

    Attributes:
        session: the ``RemoteSession``. id: the job id. total: frames it produces unless cancelled.
        received: frames received by ``poll`` so far. status: the last polled status.
        done: frames done at the last poll.
    """

    def __init__(self, session: RemoteSession, job_id: str, total: int) -> None:
        self.session, self.id, self.total = session, job_id, int(total)
        self.received = 0
        self.status = "running"
        self.done = 0
        self._path = f"{session._path}/jobs/{path_segment(job_id)}"

    def __repr__(self) -> str:
        return f"RemoteJob({self.id!r}, {self.status}, received {self.received}/{self.total})"

    @property
    def finished(self) -> bool:
        """True once the job has stopped (done, cancelled or failed) and every frame it produced
        has been received by ``poll``."""
        return self.status in TERMINAL_STATUSES and self.received >= self.done

    def poll(self) -> JobUpdate:
        """One request for the status and the results since the last poll (a bounded batch; it
        never waits for tracking). Advances ``received``.

        Returns:
            The ``JobUpdate``.

        Raises:
            SessionNotFound: the session is gone. ServerError: code ``job_not_found``, or a failure.
        """
        return drive(self.poll_steps())

    def poll_steps(self) -> Steps:
        """:meth:`poll` as steps (``sam2s.serving.steps``), with the client's ``quick_timeout``."""
        client = self.session.client
        query = {"since": self.received}
        header, arrays = yield client.begin("GET", self._path, query=query, binary=True, timeout=client.quick_timeout)
        listed = header.get("frames")
        if not isinstance(listed, list) or len(listed) != len(arrays):
            raise ServerError(200, "bad_response", "a job poll answer lists one array per frame")
        frames = [(int(t), [int(k) for k in ids], a) for (t, ids), a in zip(listed, arrays)]
        scores = header.get("confidences")
        confidences = []
        if isinstance(scores, list) and len(scores) == len(frames):
            confidences = [[None if v is None else (float(v[0]), float(v[1])) for v in row] for row in scores]
        self.received += len(frames)
        self.status, self.done = str(header["status"]), int(header["done"])
        return JobUpdate(self.status, self.done, int(header["total"]), header.get("error"), frames, confidences)

    def cancel(self) -> None:
        """Ask the job to stop after its current frame; the frames done stay pollable (poll until
        ``finished`` to get them and the final status ``"cancelled"``)."""
        drive(self.cancel_steps())

    def cancel_steps(self) -> Steps:
        """:meth:`cancel` as steps (``sam2s.serving.steps``), with the client's ``quick_timeout``."""
        client = self.session.client
        answer = yield client.begin("DELETE", self._path, timeout=client.quick_timeout)
        self.status = answer.get("status", self.status) if isinstance(answer, dict) else self.status
        if self.status in TERMINAL_STATUSES:
            self.done = max(self.done, int(answer.get("done", self.done)))
